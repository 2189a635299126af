"""``forward-lstm``: STORN's inference network (Bayer & Osendorfer 2014).

a_t = LSTM(a_{t-1}, emb(x_t)) summarises x_1..x_t; q(z_t | x_{1:t}) = N(MLP(a_t)). The LSTM is
one fused call over the sequence; it is causal, so padding after the real steps cannot reach
them. With ``use_cond`` the MLP also reads the decoder's cond_t.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import CURRENT, forward_scan
from seqvae.nn import SplitMLP, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class ForwardLSTMOptions:
    embed: int = 512
    hidden: int = 1024
    mlp: int = 512
    """Hidden size of the posterior MLP."""
    layers: int = 1
    use_cond: bool = False
    """Also condition on the decoder's cond_t (STORN's posterior does not)."""


class ForwardLSTMEncoder(Encoder):
    """Posterior from a forward LSTM over the observations up to and including x_t."""

    name = "forward-lstm"
    Options = ForwardLSTMOptions

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str]:
        return forward_scan({CURRENT})  # a_t has read x_1..x_t

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        self.rnn = nn.LSTM(options.embed, options.hidden)
        self.summary_dim = options.hidden
        cond_dim = ctx.cond_dim if options.use_cond else 0
        self.net = SplitMLP(options.hidden, cond_dim, options.mlp, options.layers, 2 * ctx.z_dim)

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        states, _ = self.rnn(self.embed(x))
        states = states * mask.unsqueeze(-1)
        return EncoderFeatures(features=self.net.first(states), summary=states)

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        return split_gaussian(self.net(features, cond if self.options.use_cond else None))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(ForwardLSTMEncoder)
