"""``filtering-mlp``: a filtering posterior q(z_t | x_t, cond_t) = N(MLP([f(x_t), cond_t])).

The VRNN's inference network (cond_t = h_{t-1}): no future observations are read. By default
f(x_t) is the decoder's context (the VRNN decoder's phi_x(x_t), shared with the generative model,
as in the paper); ``features: own`` gives the encoder its own embedding of x_t instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from seqvae import hookimpl
from seqvae.contract import Reads
from seqvae.errors import ConfigError
from seqvae.nn import SplitMLP, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class FilteringMLPOptions:
    hidden: int = 500
    layers: int = 4
    """Hidden layers of the posterior MLP."""
    features: Literal["context", "own"] = "context"
    """context: read the decoder's per-step features of x_t; own: embed x_t here."""
    embed: int = 600
    """Size of the own embedding of x_t (features: own)."""


class FilteringMLPEncoder(Encoder):
    """Posterior from x_t (through shared or own features) and the decoder's cond_t."""

    name = "filtering-mlp"
    Options = FilteringMLPOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        # features of x_t itself: a context of other features would leave x_t unread
        return Reads(context=("x_t",)) if options.features == "context" else Reads()

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str]:
        return frozenset()  # no summary

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if options.features == "context":
            if ctx.context_dim < 1:
                raise ConfigError(
                    f"{ctx.path}.features",
                    "the decoder shares no per-step features (context_dim = 0); use features: own",
                )
            feature_dim = ctx.context_dim
            self.embed = None
        else:
            feature_dim = options.embed
            self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        self.net = SplitMLP(
            feature_dim, ctx.cond_dim, options.hidden, options.layers, 2 * ctx.z_dim
        )

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        features = context if self.embed is None else self.embed(x)
        return EncoderFeatures(features=self.net.first(features))

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        return split_gaussian(self.net(features, cond))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(FilteringMLPEncoder)
