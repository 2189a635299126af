"""``gated-transition``: the Deep Markov Model's transition p(z_t | z_{t-1}) (Krishnan et al. 2017).

    gate     = sigmoid(MLP_gate(cond_t))
    proposal = MLP_prop(cond_t)
    mu       = (1 - gate) * Linear(cond_t) + gate * proposal     (Linear starts as the identity)
    logvar   = Linear(act(proposal))

cond_t is whatever the decoder exposes (z_{t-1} for the ``state-space`` decoder without a
deterministic path); Linear starts as the identity on cond_t's field ``z_prev``, if it has one.
Every layer is a loop layer: a residual posterior makes the engine run the prior in the loop.
The reference parametrises the scale with a softplus; here the same layer gives the
log-variance, clamped to [-8, 8] like every Gaussian head in seqvae.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae import hookimpl
from seqvae.contract import ANY, Reads, field_slice
from seqvae.errors import ConfigError
from seqvae.fused import LoopLinear
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

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(cond=(ANY,))

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.cond_dim < 1:
            raise ConfigError(ctx.path, "needs a decoder that exposes a condition (cond_dim >= 1)")
        cond, z, hidden = ctx.cond_dim, ctx.z_dim, options.hidden
        self.gate = mlp([cond, hidden, z], linear=LoopLinear)
        self.proposal = mlp([cond, hidden, z], linear=LoopLinear)
        self.linear = LoopLinear(cond, z)
        with torch.no_grad():  # start as z_t ~ z_{t-1}: identity on z_{t-1}'s entries, if any
            self.linear.weight.zero_()
            if ctx.cond_fields is None or "z_prev" in ctx.cond_fields:  # undeclared: its first entries
                part = field_slice(ctx.cond_fields, "z_prev", min(cond, z))
                self.linear.weight[:, part].copy_(torch.eye(z, part.stop - part.start))
            self.linear.bias.zero_()
        self.act = ClampedLeakyReLU()
        self.logvar = LoopLinear(z, z)

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        gate = torch.sigmoid(self.gate(cond))
        proposal = self.proposal(cond)
        mu = (1.0 - gate) * self.linear(cond) + gate * proposal
        return mu, self.logvar(self.act(proposal)).clamp(-8.0, 8.0)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(GatedTransitionPrior)
