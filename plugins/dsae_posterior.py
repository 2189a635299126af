"""``dsae-posterior``: DSAE's posteriors over the dynamic latents (Li & Mandt 2018).

- ``mode: factorised``: q(z_t | x_t) = N(MLP(emb(x_t))), one frame at a time;
- ``mode: full``: q(z_t | x_{1:T}, f): a bidirectional LSTM over [emb(x_t), f] (f from the
  decoder's context, the sequence-level latent), then a forward LSTM over its states, whose
  state at t gives (mu, logvar) through one linear layer (the paper's "bi-LSTM followed by an
  RNN").

Neither reads cond_t, so the whole posterior is computed before the step loop, for all steps
at once, and :meth:`posterior` only splits what was computed: nothing runs inside the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import Reads
from seqvae.errors import ConfigError
from seqvae.nn import backward_rnn_states, mlp, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class DSAEPosteriorOptions:
    mode: Literal["full", "factorised"] = "full"
    embed: int = 256
    hidden: int = 256
    """full: state size of each LSTM; factorised: the MLP's hidden size."""


class DSAEPosterior(Encoder):
    """q(z_t | x_{1:T}, f) (full) or q(z_t | x_t) (factorised), all steps before the loop."""

    name = "dsae-posterior"
    Options = DSAEPosteriorOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        if options.mode == "full":
            return Reads(context=("f",), why="the full posterior conditions on the sequence-level latent f")
        return Reads()

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str]:
        return frozenset()  # no summary

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        hidden = options.hidden
        if options.mode == "full":
            if ctx.context_dim < 1:
                raise ConfigError(f"{ctx.path}.mode", "the decoder shares no sequence-level latent f "
                                  "(context_dim = 0); use mode: factorised")  # fmt: skip
            self.forward_rnn = nn.LSTM(options.embed + ctx.context_dim, hidden)
            self.backward_rnn = nn.LSTM(options.embed + ctx.context_dim, hidden)
            self.rnn = nn.LSTM(2 * hidden, hidden)
            self.out = nn.Linear(hidden, 2 * ctx.z_dim)
        else:
            self.net = mlp([options.embed, hidden, 2 * ctx.z_dim])

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        inputs = self.embed(x)
        if self.options.mode == "factorised":
            return EncoderFeatures(features=self.net(inputs))
        inputs = torch.cat([inputs, context], dim=-1)
        forward, _ = self.forward_rnn(inputs)  # real steps come first: padding never reaches them
        both = torch.cat([forward, backward_rnn_states(self.backward_rnn, inputs, mask)], dim=-1)
        states, _ = self.rnn(both)
        return EncoderFeatures(features=self.out(states))

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        return split_gaussian(features)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(DSAEPosterior)
