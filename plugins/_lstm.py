"""The LSTM step of the decoders whose recurrence reads z_t (``latent-lstm``, ``dsae``)."""

from __future__ import annotations

from seqvae.fused import linear_sum
from seqvae.nn import lstm_cell
from seqvae.slots import Draw, State


class LSTMOverLatent:
    """For a :class:`~seqvae.slots.Decoder` with in-loop layers ``hidden_gates`` (H -> 4H) and
    ``latent_gates`` (Z -> 4H): the zero state, and one step h_t = LSTM(h_{t-1}, gates) with
    z_t = draw(h_{t-1}), cond_t = h_{t-1} and out_t = h_t."""

    def initial_state(self, batch: int) -> State:
        zeros = self.hidden_gates.weight.new_zeros(batch, self.options.hidden)
        return zeros, zeros

    def lstm_step(self, state: State, add, draw: Draw) -> tuple[State, object]:
        """``add``: the step's precomputed part of the gates (input projection, bias)."""
        h, c = state
        z = draw(h)
        # [h, z] @ [W_hh, W_z]^T + add: one product per step, forward and backward
        gates = linear_sum([self.hidden_gates, self.latent_gates], [h, z], add=add)
        h, c = lstm_cell(gates, c)
        return (h, c), h
