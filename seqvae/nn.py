"""Building blocks shared by components: clamped activations, Gaussian heads and densities.

Everything here is generic maths; components import it so that a Gaussian KL or an MLP
is written once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOG_2PI = math.log(2.0 * math.pi)


class ClampedLeakyReLU(nn.Module):
    """Leaky ReLU followed by a clamp: keeps activations bounded in long unrolls."""

    def __init__(self, slope: float = 1.0 / 3.0, bound: float = 3.0) -> None:
        super().__init__()
        self.slope = slope
        self.bound = bound

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.slope).clamp(-self.bound, self.bound)

    def extra_repr(self) -> str:
        return f"slope={self.slope:.4g}, bound={self.bound}"


def mlp(sizes: list[int], activation: type[nn.Module] = ClampedLeakyReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            layers.append(activation())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def split_gaussian(params: Tensor, bound: float = 8.0) -> tuple[Tensor, Tensor]:
    """Split the last dimension into (mu, logvar), both clamped to [-bound, bound]."""
    mu, logvar = params.clamp(-bound, bound).chunk(2, dim=-1)
    return mu, logvar


def gaussian_log_prob(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mu, exp(logvar)); sum over the event dimensions yourself."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """Elementwise KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))."""
    return 0.5 * (
        logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0
    )


def lengths_from_mask(mask: Tensor) -> Tensor:
    """Lengths (B,) of a time-major prefix mask (T, B)."""
    return mask.sum(0).long()


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a time-major batch (T, B, ...) within its own length.

    Step t < L_b of sequence b goes to L_b - 1 - t; padding steps stay where they are. Running a
    forward RNN over the result reads every sequence from its last real step backwards and
    meets padding only after the real steps, so padding cannot leak into the states; applying
    this function again restores the original order.
    """
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)
