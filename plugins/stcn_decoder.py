"""``stcn``: the generative model of STCN (Aksan & Hilliges, ICLR 2019): a hierarchy of latent
layers on a causal temporal convolution network, with no recurrence through z.

    d^1..d^L = TCN(u_1, x_1..x_T)                -- one latent layer per `vertical_dilation` blocks
    p(z_t^l | z_t^{l+1}, d_{t-1}^l)              -- cond of layer l: [z^{l+1}, d^l at position t]
    q(z_t^l | z_t^{l+1}, d_t^l, p)               -- the encoder reads d^l at position t+1
    params_{1:T} = OutTCN(z^1)  or  OutTCN([z^1..z^L])   (``dense``: STCN-dense)

Position t of the TCN has read u_{<=t} = x_{<t} (what STCN's d_{t-1} has read) and position t+1
x_{<=t} (its d_t): one pass over u_1, x_1..x_T gives both (seqvae.slots.Decoder.parallel_latents).
The latent sizes halve upwards from the lowest layer: latent_dim 496 over 5 layers is the
paper's 256 / 128 / 64 / 32 / 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from seqvae_plugins._tcn import CausalTCN
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.slots import Decoder, LatentLayer, LayerDraw, State


@dataclass
class STCNOptions:
    channels: int = 512
    """Filters of every TCN block (and the size of each layer's d^l)."""
    latent_layers: int = 5
    """Latent layers; a latent_dim below this (the conformance suite's tiny models) keeps one unit
    per layer and latent_dim layers."""
    vertical_dilation: int = 5
    """TCN blocks per latent layer: the TCN has latent_layers x vertical_dilation blocks."""
    dilation_cycle: int = 5
    """Dilations 1, 2, ..., 2^(cycle-1), repeated."""
    dense: bool = False
    """True: the emission reads every layer's z_t (STCN-dense); False: z_t^1 alone."""
    output_layers: int = 5
    """Blocks of the output TCN over the latents (0: one linear layer per step)."""
    output_channels: int = 512


def layer_sizes(latent_dim: int, layers: int) -> list[int]:
    """latent_dim split over min(layers, latent_dim) layers, lowest first, halving upwards."""
    count = min(layers, latent_dim)
    total = 2**count - 1
    upper = [max(1, latent_dim * 2 ** (count - 1 - i) // total) for i in range(1, count)]
    return [latent_dim - sum(upper), *upper]


class STCNDecoder(Decoder):
    """Causal TCN features for a top-down latent hierarchy, all steps at once; causal output TCN."""

    name = "stcn"
    Options = STCNOptions
    parallel_latents = True
    cond_for_prior = True  # the TCN feeds the prior and the posterior, not the emission

    @classmethod
    def _layers(cls, options, ctx) -> tuple[LatentLayer, ...]:
        sizes = layer_sizes(ctx.z_dim, options.latent_layers)
        width = options.channels
        return tuple(LatentLayer(z_dim=size, cond_dim=width + (sizes[i + 1] if i + 1 < len(sizes) else 0),
                                 above_dim=sizes[i + 1] if i + 1 < len(sizes) else 0,
                                 feature_start=i * width, feature_dim=width)
                     for i, size in enumerate(sizes))  # fmt: skip

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        layers = cls._layers(options, ctx)
        return {"d_t": options.channels * len(layers), "z_above": sum(layer.above_dim for layer in layers)}

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {"d_next": options.channels * len(cls._layers(options, ctx))}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        for key in ("channels", "latent_layers", "vertical_dilation", "dilation_cycle", "output_channels"):
            if getattr(options, key) < 1:
                raise ConfigError(f"{ctx.path}.{key}", f"expected at least 1, got {getattr(options, key)}")
        if ctx.z_dim < 1:
            raise ConfigError("model.latent_dim", f"decoder {self.name!r} needs latent_dim >= 1")
        self.latent_layers = self._layers(options, ctx)
        depth = len(self.latent_layers) * options.vertical_dilation
        self.cond_dim = sum(layer.cond_dim for layer in self.latent_layers)
        self.context_dim = options.channels * len(self.latent_layers)
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.channels)
        self.tcn = CausalTCN(options.channels, depth, options.dilation_cycle)
        # latent layer l reads the last block of its group of vertical_dilation blocks
        self.taps = [(i + 1) * options.vertical_dilation - 1 for i in range(len(self.latent_layers))]
        z_in = ctx.z_dim if options.dense else self.latent_layers[0].z_dim
        width = options.output_channels
        self.out_in = nn.Linear(z_in, width) if options.output_layers else None
        self.out_tcn = CausalTCN(width, options.output_layers, options.dilation_cycle)
        self.out = nn.Linear(width if options.output_layers else z_in, ctx.param_dim)

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], None]:
        blocks = self.tcn(self.embed(u))
        return {"d": torch.cat([blocks[i] for i in self.taps], dim=-1)}, None

    def initial_state(self, batch: int) -> State:
        return ()

    def context(self, pre: dict[str, Tensor], x: Tensor) -> Tensor:
        return pre["d"][1:]  # position t+1 has read x_t: the posterior's d_t

    def latents(self, pre: dict[str, Tensor], draw: LayerDraw) -> Tensor:
        d_prev = pre["d"][:-1].split(self.options.channels, dim=-1)  # positions 1..T: x_{<t}
        zs: list[Tensor] = [None] * len(self.latent_layers)
        above = None
        for i in reversed(range(len(self.latent_layers))):
            cond = d_prev[i] if above is None else torch.cat([above, d_prev[i]], dim=-1)
            zs[i] = above = draw(i, cond)
        return torch.cat(zs, dim=-1) if self.options.dense else zs[0]

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        if self.out_in is None:
            return self.out(out)
        return self.out(self.out_tcn(self.out_in(out))[-1])


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(STCNDecoder)
