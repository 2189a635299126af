"""``standard-normal``: the fixed prior p(z_t) = N(0, I) of VRNN-I and STORN; it ignores cond_t."""

from __future__ import annotations

from torch import Tensor

from seqvae import hookimpl
from seqvae.slots import Prior


class StandardNormalPrior(Prior):
    """N(0, I) at every step: mu = 0 and logvar = 0, whatever the decoder exposes."""

    name = "standard-normal"

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.z_dim = ctx.z_dim

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        zeros = cond.new_zeros(*cond.shape[:-1], self.z_dim)
        return zeros, zeros


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(StandardNormalPrior)
