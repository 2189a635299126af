"""``bilstm-static``: a sequence-level latent's posterior q(f | x_{1:T}) from a bidirectional LSTM.

DSAE's static encoder (Li & Mandt 2018): the last state of a forward LSTM over emb(x_1..x_T)
and the first state of a backward one, concatenated, give (mu, logvar) of f through one linear
layer. Each direction reads only the real steps of its sequence: the forward state is taken at
the sequence's own last step, and the backward LSTM runs over each sequence reversed within
its length (:func:`seqvae.nn.backward_rnn_states`), so padding never reaches f.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.nn import backward_rnn_states, lengths_from_mask, split_gaussian
from seqvae.slots import StaticEncoder


@dataclass
class BiLSTMStaticOptions:
    dim: int = 256
    """Size of f."""
    embed: int = 256
    hidden: int = 256
    """State size of each direction."""


class BiLSTMStaticEncoder(StaticEncoder):
    """q(f | x_{1:T}) = N(Linear([forward LSTM at T, backward LSTM at 1]))."""

    name = "bilstm-static"
    Options = BiLSTMStaticOptions

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.static_dim = options.dim
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        self.forward_rnn = nn.LSTM(options.embed, options.hidden)
        self.backward_rnn = nn.LSTM(options.embed, options.hidden)
        self.out = nn.Linear(2 * options.hidden, 2 * options.dim)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        inputs = self.embed(x)
        states, _ = self.forward_rnn(inputs)  # padding comes after the real steps
        last = (lengths_from_mask(mask) - 1).clamp_min(0)  # an all-padding column reads step 0
        batch = torch.arange(x.shape[1], device=x.device)
        forward_last = states[last.to(x.device), batch]
        backward_first = backward_rnn_states(self.backward_rnn, inputs, mask)[0]
        return split_gaussian(self.out(torch.cat([forward_last, backward_first], dim=-1)))


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(BiLSTMStaticEncoder)
