"""``state-space``: a stochastic state-space model, optionally with a deterministic forward GRU.

    d_t = GRU(d_{t-1}, emb(u_t))                 (hidden > 0: SRNN, Fraccaro et al. 2016)
    z_t ~ p(z_t | z_{t-1}, d_t) or q(...)        -- cond_t = [z_{t-1}, d_t]
    params_t = MLP_emit([z_t, d_t])

With ``hidden: 0`` there is no deterministic path and the model is the Deep Markov Model
(Krishnan et al. 2017): cond_t = z_{t-1}, params_t = MLP_emit(z_t).

d does not depend on the latents, so it is one fused ``nn.GRU`` call per sequence in
:meth:`precompute`, which returns the GRU's last hidden state as the ``carry`` for a sampler
feeding the inputs chunk by chunk. Only the latent chain z_{t-1} -> z_t runs in the loop, and
:meth:`context` shares d_t with the encoder. cond_t is [z_{t-1}, d_t], as declared by
:meth:`cond_fields`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.nn import mlp
from seqvae.slots import Decoder, Draw, State


@dataclass
class StateSpaceOptions:
    embed: int = 512
    hidden: int = 1024
    """Size of d_t; 0 removes the deterministic path."""
    emission_hidden: int = 512
    emission_layers: int = 2
    learn_z0: bool = False
    """Learn z_0 (the Deep Markov Model) instead of starting from zeros (SRNN)."""


class StateSpaceDecoder(Decoder):
    """Latent Markov chain with an optional deterministic GRU over the inputs."""

    name = "state-space"
    Options = StateSpaceOptions

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        return {"z_prev": ctx.z_dim, **({"d_t": options.hidden} if options.hidden else {})}

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {"d_t": options.hidden} if options.hidden else {}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.z_dim = ctx.z_dim
        hidden = options.hidden
        if hidden:
            self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
            self.rnn = nn.GRU(options.embed, hidden)
        self.cond_dim = ctx.z_dim + hidden
        self.context_dim = hidden
        self.z0 = nn.Parameter(torch.zeros(ctx.z_dim)) if options.learn_z0 else None
        sizes = (
            [ctx.z_dim + hidden]
            + [options.emission_hidden] * options.emission_layers
            + [ctx.param_dim]
        )
        self.emit = mlp(sizes)

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], Tensor | None]:
        if not self.options.hidden:
            return {}, None
        d, last = self.rnn(self.embed(u), carry)
        return {"d": d}, last

    def initial_state(self, batch: int) -> State:
        if self.z0 is not None:
            return (self.z0.expand(batch, -1),)
        return (self.emit[0].weight.new_zeros(batch, self.z_dim),)

    def step(self, state: State, pre_t: dict[str, Tensor], draw: Draw) -> tuple[State, Tensor]:
        (z_prev,) = state
        cond = torch.cat([z_prev, pre_t["d"]], dim=-1) if self.options.hidden else z_prev
        z = draw(cond)
        return (z,), z

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        return self.emit(torch.cat([z, pre["d"]], dim=-1) if self.options.hidden else z)

    def context(self, pre: dict[str, Tensor], x: Tensor) -> Tensor | None:
        return pre.get("d")


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(StateSpaceDecoder)
