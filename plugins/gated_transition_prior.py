"""``gated-transition``: the Deep Markov Model's transition p(z_t | z_{t-1}) (Krishnan et al. 2017).

    gate     = sigmoid(MLP_gate(cond_t))
    proposal = MLP_prop(cond_t)
    mu       = (1 - gate) * Linear(cond_t) + gate * proposal     (Linear starts as the identity)
    logvar   = Linear(act(proposal))

cond_t is whatever the decoder exposes (z_{t-1} for the ``state-space`` decoder without a
deterministic path). The reference parametrises the scale with a softplus; here the same layer
gives the log-variance, clamped to [-8, 8] like every Gaussian head in seqvae.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.nn import ClampedLeakyReLU, mlp
from seqvae.slots import Prior


@dataclass
class GatedTransitionOptions:
    hidden: int = 200
    """Hidden size of the gate and proposal MLPs."""


class GatedTransitionPrior(Prior):
    """Gated mixture of a linear and a non-linear transition of cond_t."""

    name = "gated-transition"
    Options = GatedTransitionOptions

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.cond_dim < 1:
            raise ConfigError(ctx.path, "needs a decoder that exposes a condition (cond_dim >= 1)")
        cond, z, hidden = ctx.cond_dim, ctx.z_dim, options.hidden
        self.gate = mlp([cond, hidden, z])
        self.proposal = mlp([cond, hidden, z])
        self.linear = nn.Linear(cond, z)
        with torch.no_grad():  # start as z_t ~ z_{t-1}: identity on the first z_dim inputs
            self.linear.weight.zero_()
            self.linear.weight[:, : min(cond, z)].copy_(torch.eye(z, min(cond, z)))
            self.linear.bias.zero_()
        self.act = ClampedLeakyReLU()
        self.logvar = nn.Linear(z, z)

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        gate = torch.sigmoid(self.gate(cond))
        proposal = self.proposal(cond)
        mu = (1.0 - gate) * self.linear(cond) + gate * proposal
        return mu, self.logvar(self.act(proposal)).clamp(-8.0, 8.0)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(GatedTransitionPrior)
