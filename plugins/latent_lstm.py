"""``latent-lstm``: Z-Forcing's generative model, an LSTM conditioned on z_t.

    z_t ~ p(z_t | h_{t-1}) (prior) or q(z_t | h_{t-1}, b_t) (posterior)   -- cond_t = h_{t-1}
    h_t = LSTM(h_{t-1}, [emb(u_t), Linear(z_t)])
    params_t = Emission(h_t)

With ``cond_ln`` the cell is a LayerNorm-LSTM whose hidden-to-hidden LayerNorm has gain 1 + a and
bias b, with (a, b) = clamp(MLP(z_t), -3, 3); its input is emb(u_t) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from seqvae_plugins._lstm import LSTMOverLatent
from torch import Tensor, nn
from torch.nn import functional as F

from seqvae import hookimpl
from seqvae.fused import LoopLinear
from seqvae.nn import mlp
from seqvae.slots import Decoder, Draw, State


@dataclass
class LatentLSTMOptions:
    embed: int = 512
    hidden: int = 1024
    cond_ln: bool = False
    cond_mlp: int = 512
    """Hidden size of the MLP z_t -> (a, b) of the cond_ln cell."""
    emission_hidden: int = 0
    """0: the emission is linear in h_t; otherwise an MLP with this hidden size."""


class LatentLSTMDecoder(LSTMOverLatent, Decoder):
    """LSTM whose gates read the latent z_t at every step; exposes cond_t = h_{t-1}."""

    name = "latent-lstm"
    Options = LatentLSTMOptions

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        return {"h_prev": options.hidden}

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {}

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        hidden = options.hidden
        self.cond_dim = hidden
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        # [emb(u_t), Linear(z_t)] @ W_ih is split into an input part, computed for all steps in
        # one GEMM before the loop, and a latent part: Linear(z_t) followed by the LSTM's input
        # weights is a single linear map of z_t, so it is stored as one (Z -> 4H) matrix.
        self.input_gates = nn.Linear(options.embed, 4 * hidden)
        self.hidden_gates = LoopLinear(hidden, 4 * hidden, bias=False)
        if options.cond_ln:
            self.input_norm = nn.LayerNorm(4 * hidden)
            self.cell_norm = nn.LayerNorm(hidden)
            self.latent_film = mlp([ctx.z_dim, options.cond_mlp, 8 * hidden], linear=LoopLinear)
        else:
            self.latent_gates = LoopLinear(ctx.z_dim, 4 * hidden, bias=False)
        sizes = [hidden, options.emission_hidden, ctx.param_dim] if options.emission_hidden else [hidden, ctx.param_dim]
        self.emit = mlp(sizes)

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], None]:
        gates = self.input_gates(self.embed(u))
        if self.options.cond_ln:
            gates = self.input_norm(gates)
        return {"gates": gates}, None

    def step(self, state: State, pre_t: dict[str, Tensor], draw: Draw) -> tuple[State, Tensor]:
        if not self.options.cond_ln:
            return self.lstm_step(state, pre_t["gates"], draw)
        h, c = state
        z = draw(h)
        recurrent = self.hidden_gates(h)
        gain, bias = self.latent_film(z).clamp(-3.0, 3.0).chunk(2, dim=-1)
        recurrent = F.layer_norm(recurrent, recurrent.shape[-1:]) * (1.0 + gain) + bias
        gates = pre_t["gates"] + recurrent
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.cell_norm(c))
        return (h, c), h

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        return self.emit(out)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(LatentLSTMDecoder)
