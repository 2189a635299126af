"""``gaussian-mlp``: p(z_t | cond_t) = N(MLP(cond_t)), the learned conditional prior of
Z-Forcing, VRNN and SRNN (whatever the decoder exposes as cond_t)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seqvae import hookimpl
from seqvae.contract import ANY, Reads
from seqvae.errors import ConfigError
from seqvae.fused import LoopLinear
from seqvae.nn import mlp, split_gaussian
from seqvae.slots import Prior


@dataclass
class GaussianMLPPriorOptions:
    hidden: int = 512
    layers: int = 1
    """Hidden layers (leaky ReLU 1/3 clamped to [-3, 3])."""


class GaussianMLPPrior(Prior):
    """Diagonal Gaussian whose (mu, logvar), clamped to [-8, 8], come from an MLP of cond_t."""

    name = "gaussian-mlp"
    Options = GaussianMLPPriorOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(cond=(ANY,))

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.cond_dim < 1:
            raise ConfigError(ctx.path, "needs a decoder that exposes a condition (cond_dim >= 1)")
        sizes = [ctx.cond_dim] + [options.hidden] * options.layers + [2 * ctx.z_dim]
        # loop layers: an encoder that reads the prior (a residual posterior) makes the engine
        # evaluate it once per step; otherwise it runs once over all steps, as a plain MLP
        self.net = mlp(sizes, linear=LoopLinear)

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        return split_gaussian(self.net(cond))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(GaussianMLPPrior)
