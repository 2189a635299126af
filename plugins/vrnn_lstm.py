"""``vrnn-lstm``: the VRNN's generative model (Chung et al. 2015).

    z_t ~ p(z_t | h_{t-1}) or q(z_t | x_t, h_{t-1})                    -- cond_t = h_{t-1}
    params_t = MLP_emit([phi_z(z_t), h_{t-1}])                          -- emission before ...
    h_t = LSTM(h_{t-1}, [phi_x(x_t), phi_z(z_t)])                       -- ... the update with x_t

The engine hands every decoder u_t = x_{t-1} at step t, so the update that reads x_{t-1} is
applied at the *start* of step t: the state carries z_{t-1}, and step t computes
h_{t-1} = LSTM(h_{t-2}, [phi_x(u_t), phi_z(z_{t-1})]) before drawing z_t. At step 1 there is no
previous observation and h_0 must be the true zero state. :meth:`precompute` makes step 1's
update give exactly that: it shuts the input and output gates there (pre-activations -1e30, so
their sigmoids are exactly 0), and from c_0 = 0 the cell gives c = f * 0 + 0 * g = 0 and
h = 0 * tanh(0) = 0, with exactly zero gradients through the step (sigmoid' = 0 there) -- what
skipping the update gives, without a per-step select. The ``carry`` it returns tells a sampler's
later calls that step 1 is past.

phi_x is shared with the posterior: :meth:`context` returns phi_x(x_t), which the
``filtering-mlp`` encoder reads. Emission work (phi_z(z_t), the emission MLP) runs once over all
steps in :meth:`emission`; only phi_z(z_{t-1}) for the recurrence is computed inside the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.fused import LoopLinear, linear_sum
from seqvae.fused_chain import LoopSequential
from seqvae.nn import ClampedLeakyReLU, lstm_cell, mlp
from seqvae.slots import Decoder, Draw, State

SHUT = -1e30
"""The input and output gates' pre-activation at step 1: sigmoid gives exactly 0 from it (in
float16 it is -inf, which gives 0 too)."""


@dataclass
class VRNNLSTMOptions:
    hidden: int = 2000
    x_features: int = 600
    """Width of the feature extractor phi_x."""
    x_layers: int = 4
    z_features: int = 500
    """Width of the feature extractor phi_z."""
    z_layers: int = 4
    emission_hidden: int = 600
    emission_layers: int = 4


def feature_extractor(
    first: nn.Module, width: int, layers: int, linear: type[nn.Linear] = nn.Linear
) -> nn.Sequential:
    """``first`` then ``layers - 1`` square layers, each followed by the activation (in-loop
    layers make a LoopSequential: one autograd node per step)."""
    modules = [first, ClampedLeakyReLU()]
    for _ in range(layers - 1):
        modules += [linear(width, width), ClampedLeakyReLU()]
    return LoopSequential(*modules) if issubclass(linear, LoopLinear) else nn.Sequential(*modules)


class VRNNLSTMDecoder(Decoder):
    """LSTM over [phi_x(x_t), phi_z(z_t)] whose emission reads h_{t-1}; cond_t = h_{t-1}."""

    name = "vrnn-lstm"
    Options = VRNNLSTMOptions

    @classmethod
    def cond_fields(cls, options, ctx) -> dict[str, int]:
        return {"h_prev": options.hidden}

    @classmethod
    def context_fields(cls, options, ctx) -> dict[str, int]:
        return {"x_t": options.x_features}  # phi_x(x_t), shared with the posterior

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        hidden = options.hidden
        self.cond_dim = hidden
        self.context_dim = options.x_features
        embed = ctx.likelihood.input_embedding(ctx.x_dim, options.x_features)
        self.phi_x = feature_extractor(embed, options.x_features, options.x_layers)
        # phi_z runs inside the loop (on z_{t-1}) as well as after it (emission): loop layers
        self.phi_z = feature_extractor(
            LoopLinear(ctx.z_dim, options.z_features), options.z_features, options.z_layers, LoopLinear
        )
        # the LSTM's input weights split into a phi_x part (one GEMM over all steps in
        # precompute) and a phi_z part applied inside the loop
        self.input_gates = nn.Linear(options.x_features, 4 * hidden)
        self.latent_gates = LoopLinear(options.z_features, 4 * hidden, bias=False)
        self.hidden_gates = LoopLinear(hidden, 4 * hidden, bias=False)
        self.emit = mlp(
            [options.z_features + hidden]
            + [options.emission_hidden] * options.emission_layers
            + [ctx.param_dim]
        )

    def precompute(self, u: Tensor, carry=None) -> tuple[dict[str, Tensor], bool]:
        gates = self.input_gates(self.phi_x(u))
        if carry is None:  # u starts the sequence: step 1 keeps the zero state (module docstring)
            hidden = self.options.hidden
            shut = gates.new_zeros(4 * hidden)
            shut[:hidden] = shut[3 * hidden :] = SHUT  # (i, f, g, o) order
            gates = torch.cat([gates[:1] + shut, gates[1:]])
        return {"gates": gates}, True

    def initial_state(self, batch: int) -> State:
        weight = self.hidden_gates.weight
        h = weight.new_zeros(batch, self.options.hidden)
        return h, h, weight.new_zeros(batch, self.phi_z[0].in_features)

    def step(self, state: State, pre_t: dict[str, Tensor], draw: Draw) -> tuple[State, Tensor]:
        h, c, z_prev = state
        # [h, phi_z(z_{t-1})] @ [W_hh, W_z]^T + pre_t: one product per step
        gates = linear_sum([self.hidden_gates, self.latent_gates], [h, self.phi_z(z_prev)], add=pre_t["gates"])
        h, c = lstm_cell(gates, c)
        z = draw(h)
        return (h, c, z), h

    def emission(self, out: Tensor, z: Tensor | None, pre: dict[str, Tensor]) -> Tensor:
        return self.emit(torch.cat([self.phi_z(z), out], dim=-1))

    def context(self, pre: dict[str, Tensor], x: Tensor) -> Tensor:
        return self.phi_x(x)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(VRNNLSTMDecoder)
