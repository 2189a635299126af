"""``ladder-mlp``: the prior of a latent hierarchy drawn without a step loop, one MLP per layer.

    p(z_t^l | cond_t^l) = N(MLP_l(cond_t^l)),   cond_t^l = [z_t^{l+1}, d^l]   (the decoder's)

Under a decoder with parallel latents (seqvae.slots.Decoder.parallel_latents) only.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import Reads
from seqvae.nn import mlp, split_gaussian
from seqvae.slots import Prior


@dataclass
class LadderPriorOptions:
    hidden: int = 512
    layers: int = 2
    """Hidden layers of each latent layer's MLP (leaky ReLU 1/3 clamped to [-3, 3])."""


class LadderMLPPrior(Prior):
    """A diagonal Gaussian per latent layer, (mu, logvar) clamped to [-8, 8]."""

    name = "ladder-mlp"
    Options = LadderPriorOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(cond=("d_t",), layered=True)

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.nets = nn.ModuleList(mlp([layer.cond_dim] + [options.hidden] * options.layers + [2 * layer.z_dim])
                                  for layer in ctx.latent_layers)  # fmt: skip

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"prior {self.name!r} gives latent layers (Prior.layer), not one z_t per step")

    def layer(self, layer: int, cond: Tensor) -> tuple[Tensor, Tensor]:
        return split_gaussian(self.nets[layer](cond))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(LadderMLPPrior)
