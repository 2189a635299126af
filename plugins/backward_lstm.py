"""``backward-lstm``: Z-Forcing's inference network.

b_t = LSTM_bwd(b_{t+1}, emb(x_t)) summarises x_t..x_T; q(z_t | cond_t, b_t) = N(MLP([cond_t, b_t])).
The backward LSTM is one fused ``nn.LSTM`` call over each sequence reversed within its own
length, so padding is read only after the real steps and never reaches b_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import CURRENT, backward_scan, field_reads
from seqvae.fused import LoopLinear
from seqvae.nn import ClampedLeakyReLU, lengths_from_mask, reverse_padded, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class BackwardLSTMOptions:
    embed: int = 512
    hidden: int = 1024
    mlp: int = 512
    """Hidden size of the posterior MLP."""
    use_context: bool = False
    """Also feed the decoder's per-step context (if it has one) to the backward LSTM."""


class BackwardLSTMEncoder(Encoder):
    """Posterior from the decoder's cond_t (h_{t-1}) and a backward LSTM over the observations."""

    name = "backward-lstm"
    Options = BackwardLSTMOptions

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str] | None:
        # b_t reads x_t..x_T, and with use_context whatever the context read at those steps
        context = field_reads(ctx.context_fields) if options.use_context else frozenset()
        return None if context is None else backward_scan({CURRENT, *context})

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        context = ctx.context_dim if options.use_context else 0
        self.rnn = nn.LSTM(options.embed + context, options.hidden)
        self.summary_dim = options.hidden
        # The first posterior layer acts on [cond_t, b_t]; it is split so that the b_t half
        # runs once over the whole sequence and only the cond_t half runs inside the loop.
        self.post_summary = nn.Linear(options.hidden, options.mlp)
        self.post_cond = LoopLinear(ctx.cond_dim, options.mlp, bias=False) if ctx.cond_dim else None
        self.post_act = ClampedLeakyReLU()
        self.post_out = LoopLinear(options.mlp, 2 * ctx.z_dim)

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        inputs = self.embed(x)
        if self.options.use_context and context is not None:
            inputs = torch.cat([inputs, context], dim=-1)
        lengths = lengths_from_mask(mask)
        states, _ = self.rnn(reverse_padded(inputs, lengths))
        summary = reverse_padded(states, lengths) * mask.unsqueeze(-1)
        return EncoderFeatures(features=self.post_summary(summary), summary=summary)

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        pre = features if self.post_cond is None else self.post_cond(cond, add=features)
        return split_gaussian(self.post_out(self.post_act(pre)))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(BackwardLSTMEncoder)
