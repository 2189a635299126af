"""``gmm``: a mixture of diagonal Gaussians per step (the GMM outputs of RNN-GMM and VRNN-GMM).

    p(x_t | params_t) = sum_k pi_k N(x_t; mu_k, diag(exp(logvar_k))),  pi = softmax(logits)

params_t holds K logits, then K x D means, then K x D log-variances (clamped to [-bound, bound]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.nn import diagonal_gmm_log_prob
from seqvae.slots import Likelihood


@dataclass
class GMMOptions:
    components: int = 20
    logvar_bound: float = 8.0
    """log-variances are clamped to [-bound, bound]."""


class GMM(Likelihood):
    """Mixture of ``components`` diagonal Gaussians: K + 2 K D parameters per step."""

    name = "gmm"
    Options = GMMOptions
    support: ClassVar[str] = "real"

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if options.components < 1:
            raise ConfigError(
                f"{ctx.path}.components", f"expected at least 1, got {options.components}"
            )

    def param_dim(self, x_dim: int) -> int:
        return self.options.components * (1 + 2 * x_dim)

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits (..., K), mu (..., K, D), logvar (..., K, D)) from params (..., P)."""
        k = self.options.components
        x_dim = (params.shape[-1] - k) // (2 * k)
        logits, rest = params.split([k, 2 * k * x_dim], dim=-1)
        mu, logvar = rest.unflatten(-1, (2, k, x_dim)).unbind(-3)
        bound = self.options.logvar_bound
        return logits, mu, logvar.clamp(-bound, bound)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return diagonal_gmm_log_prob(x, *self.split(params))

    def sample(self, params: Tensor) -> Tensor:
        logits, mu, logvar = self.split(params)
        # no argument validation: it reads the logits back to the host, a GPU sync per step
        k = torch.distributions.Categorical(logits=logits, validate_args=False).sample()  # (...)
        index = k[..., None, None].expand(*k.shape, 1, mu.shape[-1])
        mu, logvar = mu.gather(-2, index).squeeze(-2), logvar.gather(-2, index).squeeze(-2)
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def input_embedding(self, x_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(x_dim, out_dim)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(GMM)
