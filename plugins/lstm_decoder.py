"""``lstm``: the deterministic RNN baseline (RNN-Gauss, RNN-GMM): no latent variables.

    h_t = LSTM(h_{t-1}, emb(u_t)),  params_t = Emission(h_t)

Nothing is stochastic, so the whole sequence is one fused ``nn.LSTM`` call (:meth:`unroll`),
which also takes and returns the state so that a sampler can feed one step at a time. The
model's "ELBO" is its exact log-likelihood (the KL term is empty).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.nn import mlp
from seqvae.slots import Decoder, State


@dataclass
class LSTMOptions:
    embed: int = 512
    hidden: int = 1024
    layers: int = 1
    emission_hidden: int = 0
    """0: the emission is linear in h_t; otherwise an MLP with this hidden size."""


class LSTMDecoder(Decoder):
    """A plain (stacked) LSTM language model over the inputs."""

    name = "lstm"
    Options = LSTMOptions
    uses_latent = False

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        return {}  # no latents: nothing is drawn

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        self.rnn = nn.LSTM(options.embed, options.hidden, num_layers=options.layers)
        hidden = options.emission_hidden
        self.emit = mlp(
            [options.hidden, hidden, ctx.param_dim] if hidden else [options.hidden, ctx.param_dim]
        )

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], None]:
        return {"embedded": self.embed(u)}, None

    def initial_state(self, batch: int) -> State:
        zeros = self.rnn.weight_hh_l0.new_zeros(batch, self.options.layers, self.options.hidden)
        return zeros, zeros

    def unroll(self, pre: dict[str, Tensor], state: State) -> tuple[Tensor, State]:
        h, c = (s.transpose(0, 1).contiguous() for s in state)  # (B, L, H) -> nn.LSTM's (L, B, H)
        out, (h, c) = self.rnn(pre["embedded"], (h, c))
        return out, (h.transpose(0, 1), c.transpose(0, 1))

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        return self.emit(out)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(LSTMDecoder)
