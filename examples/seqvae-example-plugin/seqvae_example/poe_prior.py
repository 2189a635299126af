# seqvae_example/poe_prior.py
"""``poe``: p(z_t | cond_t) as a product of Gaussian experts.

Each of K experts is a diagonal Gaussian N(mu_k, exp(logvar_k)) read from cond_t by its own
head of one MLP; a fixed N(0, I) expert joins them. A product of Gaussians is a Gaussian:
precisions add and the mean is the precision-weighted mean,

    precision = 1 + sum_k exp(-logvar_k),   mu = sum_k mu_k exp(-logvar_k) / precision,

so the prior meets seqvae's prior contract, (mu, logvar) of a diagonal Gaussian, exactly, and the
engine's KL stays analytic. (A *mixture* of Gaussians is not a Gaussian: it would need a Monte
Carlo KL, which the prior slot does not offer.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.nn import mlp, split_gaussian
from seqvae.slots import Prior


@dataclass
class PoEPriorOptions:
    experts: int = 4
    """Gaussian experts multiplied together (with a fixed standard-normal one)."""
    hidden: int = 64
    """Hidden units of the MLP whose heads are the experts."""

    def validate(self) -> str | None:
        # returned, not raised: seqvae names the YAML path and the file in front of it
        if self.experts < 1:
            return f"experts: expected at least 1, got {self.experts}"
        if self.hidden < 1:
            return f"hidden: expected at least 1, got {self.hidden}"
        return None


class ProductOfExpertsPrior(Prior):
    """Product of Gaussian experts of cond_t and N(0, I): precisions add, means are weighted."""

    name = "poe"
    Options = PoEPriorOptions

    def __init__(self, options: PoEPriorOptions, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.cond_dim < 1:  # a decoder that passes nothing to draw() gives no condition
            raise ConfigError(ctx.path, "needs a decoder that exposes cond_t (cond_dim >= 1)")
        self.experts, self.z_dim = options.experts, ctx.z_dim
        self.net = mlp([ctx.cond_dim, options.hidden, 2 * options.experts * ctx.z_dim])

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        # any leading shape: the engine calls this on (T, B, C) after the loop, or (B, C) in it
        heads = self.net(cond).unflatten(-1, (self.experts, 2 * self.z_dim))
        mu, logvar = split_gaussian(heads)  # (..., K, Z) each, log-variances clamped to [-8, 8]
        precision = torch.exp(-logvar)
        total = 1.0 + precision.sum(-2)  # the N(0, I) expert adds precision 1 and mean 0
        return (mu * precision).sum(-2) / total, -torch.log(total)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(ProductOfExpertsPrior)
