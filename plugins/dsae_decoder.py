"""``dsae``: the generative model of DSAE (Li & Mandt 2018), p(x_t | z_t, f) with a learned
recurrent prior on z.

    h_t = LSTM(h_{t-1}, z_t)                    -- the prior's recurrence over z_{<=t}
    z_t ~ p(z_t | h_{t-1}) or q(z_t | ...)       -- cond_t = h_{t-1}
    params_t = MLP_emit([z_t, f])               -- f: the sequence-level latent (model.static)

Nothing reads the inputs u: x_{<t} reaches x_t only through z and f, which is what lets f hold
what is constant over the sequence and z what changes. The decoder shares f with the encoder
as its context (a "full" posterior q(z_t | x_{1:T}, f) reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from seqvae_plugins._lstm import LSTMOverLatent
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.fused import LoopLinear
from seqvae.nn import mlp
from seqvae.slots import Decoder, Draw, State


@dataclass
class DSAEOptions:
    hidden: int = 256
    """State size of the prior's LSTM over z."""
    emission_hidden: int = 256
    emission_layers: int = 2


class DSAEDecoder(LSTMOverLatent, Decoder):
    """A recurrent prior over z_t and an emission from (z_t, f); reads the static latent f."""

    name = "dsae"
    Options = DSAEOptions
    reads_static = True
    cond_for_prior = True  # h_t exists for p(z_{t+1} | h_t) alone

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        return {"h_prev": options.hidden}

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {"f": ctx.static_dim}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        hidden = options.hidden
        self.cond_dim = hidden
        self.context_dim = ctx.static_dim
        self.gate_bias = nn.Parameter(torch.zeros(4 * hidden))
        self.hidden_gates = LoopLinear(hidden, 4 * hidden, bias=False)
        self.latent_gates = LoopLinear(ctx.z_dim, 4 * hidden, bias=False)
        sizes = [ctx.z_dim + ctx.static_dim] + [options.emission_hidden] * options.emission_layers + [ctx.param_dim]
        self.emit = mlp(sizes)

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], None]:
        # the gates' bias as a per-step addend: the in-loop product adds it in the same call
        return {"gates": self.gate_bias.expand(*u.shape[:2], -1)}, None

    def step(self, state: State, pre_t: dict[str, Tensor], draw: Draw) -> tuple[State, Tensor]:
        return self.lstm_step(state, pre_t["gates"], draw)

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        return self.emit(torch.cat([z, pre["static"]], dim=-1))

    def context(self, pre: dict[str, Tensor], x: Tensor) -> Tensor | None:
        return pre["static"]


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(DSAEDecoder)
