"""Flow posteriors: K inverse autoregressive steps on top of any encoder's Gaussian.

    z^0 = mu + sigma * eps                    the encoder's q(z_t | .), exactly as without a flow
    (m_k, s_k) = MADE_k(z^{k-1} [, cond_t])   autoregressive in z's dimensions (Germain et al. 2015)
    z^k = g_k * z^{k-1} + (1 - g_k) * m_k,    g_k = sigmoid(s_k)   (Kingma et al. 2016, eq. 14)
    log q(z^K) = log N(z^0; mu, sigma) - sum_k sum_i log g_k,i

The flow is an engine-owned option block of the encoder slot (``model.encoder.flow``), so it
wraps whatever Gaussian an encoder returns, and the engine applies it inside the step loop on
that step's sample: z^K is what the decoder's recurrence, the next step's condition and the
emission read. The KL is then the single-sample estimate log q(z^K) - log p(z^K), and the IWAE
bound's importance weights use log q(z^K) (:class:`seqvae.model.Trace`).

Successive steps read z's dimensions in opposite orders (each step's masks are built for its own
order, which is a permutation without moving any tensor). Each step's gate bias starts at
``gate_bias`` (sigmoid(2) = 0.88, Pyro's ``InverseAutoregressiveFlowStable``), so a new flow
starts close to the identity and its updates are small. The in-loop layers are
:class:`~seqvae.fused.LoopLinear` layers whose weights are masked by a parametrisation: they take
the engine's fast path (deferred weight gradients) like every other in-loop layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from seqvae.fused import LoopLinear
from seqvae.nn import LOG_2PI


@dataclass
class FlowOptions:
    """``model.encoder.flow``: the options of the inverse autoregressive flow on q(z_t | .)."""

    steps: int = 0
    """IAF steps; 0: the encoder's Gaussian as it is (analytic KL)."""
    hidden: int = 100
    """Width of each step's MADE hidden layer (Pyro's DMM: 100)."""
    context: bool = False
    """Each step also reads cond_t, the decoder's per-step condition (Kingma et al.'s h)."""
    gate_bias: float = 2.0
    """Initial bias of the gate pre-activation s: sigmoid(2) = 0.88 keeps the first updates small."""

    def validate(self) -> str | None:
        if self.steps < 0:
            return f"steps: expected an int >= 0 (0: no flow), got {self.steps}; set model.encoder.flow.steps=0"
        if self.hidden < 1:
            return f"hidden: expected an int >= 1, got {self.hidden}; set model.encoder.flow.hidden=100"
        return None


class _Mask(nn.Module):
    """Weight parametrisation: the weight times a fixed 0/1 mask (rebuilt from the options, so it
    is not saved)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


def masked_loop_linear(mask: Tensor) -> LoopLinear:
    """A LoopLinear (out, in) = mask.shape whose weight entries outside ``mask`` stay zero in the
    forward pass and get no gradient."""
    layer = LoopLinear(mask.shape[1], mask.shape[0])
    parametrize.register_parametrization(layer, "weight", _Mask(mask.to(layer.weight.dtype)))
    return layer


class IAFStep(nn.Module):
    """One inverse autoregressive step: output i depends on inputs that come before i in
    ``order`` (and on the context), so the Jacobian is triangular in that order."""

    def __init__(self, z_dim: int, hidden: int, context_dim: int, order: Tensor, gate_bias: float) -> None:
        super().__init__()
        self.register_buffer("order", order.clone(), persistent=False)
        degree = torch.empty_like(order)
        degree[order] = torch.arange(z_dim)  # where each dimension comes in the order
        # hidden unit k sees inputs of degree < d_k; output i sees hidden units with d_k <= degree(i),
        # so output i sees only inputs before it. Units of degree 0 see only the context and bias.
        hidden_degree = torch.arange(hidden) % z_dim
        self.inp = masked_loop_linear((degree.unsqueeze(0) < hidden_degree.unsqueeze(1)).float())
        self.ctx = LoopLinear(context_dim, hidden, bias=False) if context_dim else None
        out_mask = (hidden_degree.unsqueeze(0) <= degree.unsqueeze(1)).float()
        self.out = masked_loop_linear(torch.cat([out_mask, out_mask]))  # (m, s) for each dimension
        with torch.no_grad():
            self.out.bias[z_dim:].fill_(gate_bias)

    def forward(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """The step's output and log |det dz'/dz| per sample (...,)."""
        add = self.ctx(cond) if self.ctx is not None else None
        m, s = self.out(F.relu(self.inp(z, add=add))).chunk(2, dim=-1)
        gate = torch.sigmoid(s)
        # g z + (1 - g) m, the numerically stable form (the gate interpolates, never divides)
        return torch.addcmul(m, gate, z - m), F.logsigmoid(s).sum(-1)


class InverseAutoregressiveFlow(nn.Module):
    """K IAF steps on a diagonal Gaussian sample, with its log-density.

    ``steps=0`` is a valid flow, the identity: its log-density is the Gaussian's, evaluated at
    the sample, so the KL built from it is the sampled estimate of the analytic one (a test uses
    it to force the sampled path); the engine builds no flow for ``model.encoder.flow.steps: 0``.
    """

    def __init__(self, options: FlowOptions, z_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.options = options
        context_dim = cond_dim if options.context else 0
        forward, backward = torch.arange(z_dim), torch.arange(z_dim).flip(0)
        self.steps = nn.ModuleList(
            IAFStep(z_dim, options.hidden, context_dim, forward if k % 2 == 0 else backward, options.gate_bias)
            for k in range(options.steps)
        )

    def forward(self, z0: Tensor, logvar: Tensor, noise: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(z^K, log q(z^K)) from the base sample z^0 = mu + exp(logvar / 2) noise; the density
        is summed over z's dimensions: (...,)."""
        # log N(z0; mu, sigma) from the noise: (z0 - mu) / sigma is the noise itself
        log_q = torch.addcmul(logvar + LOG_2PI, noise, noise).sum(-1).mul(-0.5)
        z = z0
        for step in self.steps:
            z, log_det = step(z, cond)
            log_q = log_q - log_det
        return z, log_q

    def transform(self, z0: Tensor, cond: Tensor) -> Tensor:
        """z^K alone (auxiliary objectives that recompute z)."""
        z = z0
        for step in self.steps:
            z, _ = step(z, cond)
        return z


def build_flow(options: FlowOptions | None, z_dim: int, cond_dim: int) -> InverseAutoregressiveFlow | None:
    """The flow of ``model.encoder.flow``, or None for ``steps: 0`` (the Gaussian as it is)."""
    if options is None or options.steps == 0:
        return None
    return InverseAutoregressiveFlow(options, z_dim, cond_dim)
