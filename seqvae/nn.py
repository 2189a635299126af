"""Building blocks shared by components: clamped activations, Gaussian heads and densities.

Everything here is generic maths; components import it so that a Gaussian KL or an MLP
is written once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqvae.fused import LoopLinear

LOG_2PI = math.log(2.0 * math.pi)


class ClampedLeakyReLU(nn.Module):
    """Leaky ReLU followed by a clamp: keeps activations bounded in long unrolls."""

    def __init__(self, slope: float = 1.0 / 3.0, bound: float = 3.0) -> None:
        super().__init__()
        self.slope = slope
        self.bound = bound

    def forward(self, x: Tensor) -> Tensor:
        # hardtanh is clamp with a one-kernel backward (clamp's takes four); they differ only
        # in the gradient at exactly +-bound
        return F.hardtanh(F.leaky_relu(x, self.slope), -self.bound, self.bound)

    def extra_repr(self) -> str:
        return f"slope={self.slope:.4g}, bound={self.bound}"


def mlp(
    sizes: list[int],
    activation: type[nn.Module] = ClampedLeakyReLU,
    linear: type[nn.Linear] = nn.Linear,
) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last).

    ``linear=LoopLinear`` (:mod:`seqvae.fused`) for an MLP that runs inside the step loop."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(activation())
        layers.append(linear(n_in, n_out))
    return nn.Sequential(*layers)


def split_gaussian(params: Tensor, bound: float = 8.0) -> tuple[Tensor, Tensor]:
    """Split the last dimension into (mu, logvar), both clamped to [-bound, bound]."""
    mu, logvar = F.hardtanh(params, -bound, bound).chunk(2, dim=-1)  # a clamp, see ClampedLeakyReLU
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
    steps, batch = x.shape[:2]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    # one row gather over the flattened (T * B) rows: about 2.5x faster than gather along
    # dim 0 with an index expanded over the features, forward and backward
    rows = (index * batch + torch.arange(batch, device=x.device)).reshape(-1)
    return x.reshape(steps * batch, *x.shape[2:]).index_select(0, rows).view_as(x)


def backward_rnn_states(rnn: nn.RNNBase, inputs: Tensor, mask: Tensor) -> Tensor:
    """States (T, B, H) of a fused RNN run over each sequence from its last real step back to
    its first, returned in the original order and zero on padding.

    The state at step t summarises inputs t..L_b of its sequence; one call for the whole batch.
    """
    lengths = lengths_from_mask(mask)
    states, _ = rnn(reverse_padded(inputs, lengths))
    return reverse_padded(states, lengths) * mask.unsqueeze(-1)


def lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM update from pre-activation gates (..., 4H) in (i, f, g, o) order: (h, c)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def diagonal_gmm_log_prob(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log sum_k pi_k N(x; mu_k, diag(exp(logvar_k))): x (..., D), logits (..., K),
    mu and logvar (..., K, D) -> (...). Computed with logsumexp over the components."""
    per_component = gaussian_log_prob(x.unsqueeze(-2), mu, logvar).sum(-1)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + per_component, dim=-1)


class SplitMLP(nn.Module):
    """MLP([a, b]) whose first layer is split into a part acting on a and one acting on b.

    For a posterior whose input is partly known before the step loop (a: sequence features,
    run through :meth:`first` once for all steps) and partly only inside it (b: the step's
    condition). ``forward(first(a), b)`` equals an MLP applied to the concatenation [a, b];
    ``b_dim = 0`` drops b. ``layers`` counts the hidden layers (at least 1). The layers after
    the split run once per step, so they are :class:`~seqvae.fused.LoopLinear` layers.
    """

    def __init__(self, a_dim: int, b_dim: int, hidden: int, layers: int, out_dim: int) -> None:
        super().__init__()
        self.a = nn.Linear(a_dim, hidden)
        self.b = LoopLinear(b_dim, hidden, bias=False) if b_dim else None
        self.act = ClampedLeakyReLU()
        self.rest = mlp([hidden] * max(layers, 1) + [out_dim], linear=LoopLinear)

    def first(self, a: Tensor) -> Tensor:
        """The a-part of the first layer's pre-activation (..., hidden)."""
        return self.a(a)

    def forward(self, first_a: Tensor, b: Tensor | None = None) -> Tensor:
        pre = first_a if self.b is None else self.b(b, add=first_a)
        return self.rest(self.act(pre))
