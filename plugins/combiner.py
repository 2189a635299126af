"""``combiner``: the Deep Markov Model's inference network (Krishnan et al. 2017, "ST-R").

    b_t = LSTM_bwd(b_{t+1}, emb(x_t))         one fused call, sequences reversed within their
                                               own lengths, so b_t summarises x_t..x_T
    h_t = (tanh(Linear(z_{t-1})) + b_t) / 2    the combiner
    q(z_t | z_{t-1}, b_t) = N(Linear(h_t))

z_{t-1} is the field ``z_prev`` of cond_t, which the decoder declares (the ``state-space``
decoder's cond_t holds it); ``cond: all`` reads the whole of cond_t instead. Both in-loop
layers are loop layers (the fast path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import ANY, CURRENT, Reads, backward_scan, field_slice
from seqvae.errors import ConfigError
from seqvae.fused import LoopLinear
from seqvae.nn import backward_rnn_states, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class CombinerOptions:
    embed: int = 128
    hidden: int = 600
    cond: Literal["latent", "all"] = "latent"


class CombinerEncoder(Encoder):
    """Posterior averaging a transform of z_{t-1} with a backward LSTM state b_t."""

    name = "combiner"
    Options = CombinerOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(cond=("z_prev",) if options.cond == "latent" else (ANY,))

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str]:
        return backward_scan({CURRENT})

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.z_prev = field_slice(ctx.cond_fields, "z_prev", ctx.z_dim) if options.cond == "latent" else None
        if options.cond == "latent" and ctx.cond_fields is None and ctx.cond_dim < ctx.z_dim:  # undeclared
            raise ConfigError(
                f"{ctx.path}.cond",
                f"cond_t has {ctx.cond_dim} entries, fewer than latent_dim {ctx.z_dim}",
            )
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        self.rnn = nn.LSTM(options.embed, options.hidden)
        self.summary_dim = options.hidden
        cond_dim = ctx.z_dim if options.cond == "latent" else ctx.cond_dim
        self.from_cond = LoopLinear(cond_dim, options.hidden)
        self.out = LoopLinear(options.hidden, 2 * ctx.z_dim)

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        states = backward_rnn_states(self.rnn, self.embed(x), mask)
        return EncoderFeatures(features=states, summary=states)

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        z_prev = cond[..., self.z_prev] if self.options.cond == "latent" else cond
        combined = 0.5 * (torch.tanh(self.from_cond(z_prev)) + features)
        return split_gaussian(self.out(combined))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(CombinerEncoder)
