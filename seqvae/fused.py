"""Step-loop linear layers: weight gradients as one GEMM after the loop, packed weights on CPU.

Inside a hand-written time loop a linear layer y_t = x_t W^T + b runs T times on (B, in)
inputs. Plain autograd then computes T weight gradients g_t^T x_t in backward, each a skinny
GEMM of inner size B that writes a full (out, in) matrix, and adds them up: for a large
recurrent matrix that is most of the loop's backward time. The weight gradient is the same
sum sum_t g_t^T x_t = G^T X over the stacked per-step gradients and inputs, so this module
records (g_t, x_t) during backward and computes it once autograd has visited every step, as a
few large GEMMs over chunks of steps (see ``FLUSH_ROWS``).

Large layers go through a :class:`~seqvae.weight_hub.WeightHub` (``seqvae/weight_hub.py``): an
autograd node that runs after every step's backward and finds all (g_t, x_t) collected, and on
CPU weights reordered once per loop into oneDNN's blocked layout.

Small layers (fewer than ``HUB_MIN_ELEMENTS`` weights) defer their weight gradient without a
Python autograd node per step, whose overhead would exceed what they save: see
:class:`ProbeHub`.

Layers whose outputs are summed (the gates of an LSTM read [h_{t-1}, z_t]) go through one hub
with :func:`linear_sum`: one product per step of the concatenated inputs with the concatenated
weights, forward and backward, instead of one per layer.

Use: components build their in-loop layers as :class:`LoopLinear` (a drop-in ``nn.Linear``
with the same parameters and state-dict keys), and the engine runs the loop inside
:func:`step_loop`, splitting precomputed sequences into steps with :func:`unbind_steps`.
Outside a ``step_loop`` block, without autograd, or for frozen weights, a ``LoopLinear`` is
exactly ``nn.Linear``. Nothing here knows a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from seqvae.weight_hub import WeightHub

DEFER_MIN_ELEMENTS = 0
"""Layers whose weights have fewer elements are left to plain autograd (an ablation knob:
``math.inf`` switches every deferral off)."""

HUB_MIN_ELEMENTS = 1 << 19
"""Layers with at least this many weights go through a :class:`WeightHub` (an autograd node per
step, packed weights on CPU); smaller ones through a :class:`ProbeHub` (native ops per step).
The hub's Python node costs about 0.1 ms per step forward and backward; packing saves more than
that only for large weights (measured on whole training steps at batch 32: with a 1024 x 320
gates layer as probes 4 % faster, with a 4096 x 1280 one 20 % slower)."""

FLUSH_ROWS = 256
"""Recorded steps are folded into the weight gradient every this many rows: products with an
inner size of 256 run near the matmul rate, and only that many rows are held at a time."""

PACK_MIN_ELEMENTS = 1 << 18
"""Weights with fewer elements are multiplied with plain GEMM calls: for them the reorder and
the oneDNN call overhead cost more than packing saves."""


class ProbeHub:
    """Deferred weight gradients for small in-loop layers, with only native ops per step.

    When the loop first runs the layers, an autograd node makes *probes* P (steps, *batch, out)
    from their weights and biases (P holds the bias, or zeros) and unbinds them. Step t
    computes ``P[t] (+ add) + sum_i x_i W_i^T`` with ``addmm`` on detached weights: a native op
    whose backward computes input gradients only. Autograd stacks dL/dP[t] = g_t of every step
    into one dP, and the node, which runs after every step's backward, adds up dW_i = dP^T X_i
    over chunks of ``FLUSH_ROWS`` rows, and the bias gradient, the sum of dP.

    When the first call's ``add`` is step 0 of a sequence split by :func:`unbind_steps` (the
    engine's precomputed inputs), P is that whole sequence plus the bias, and the node passes
    dP on as its gradient: step t then adds nothing, and autograd stacks no per-step gradients
    of ``add``. A later call whose ``add`` is not step t of the same sequence gets None.

    A call beyond the loop's step count, or with another batch shape, gets None: the caller
    then runs the layers with plain autograd, which is as correct.
    """

    def __init__(
        self,
        weights: list[Tensor],
        biases: list[Tensor | None],
        steps: int,
        batch_shape,
        add: Tensor | None = None,
        sequences: dict[int, tuple[Tensor, Tensor, int]] | None = None,
    ) -> None:
        self.n = len(weights)
        self.weights_t = [w.detach().t() for w in weights]
        self.has_bias = [b is not None for b in biases]
        self.steps, self.batch_shape = steps, torch.Size(batch_shape)
        self.inputs: list[list[Tensor]] = []  # per call: the layers' inputs, detached (freed with the graph)
        self.sequences = {} if sequences is None else sequences  # see _Loop.sequences
        self.source: Tensor | None = None  # the sequence whose steps are the calls' ``add``
        whole, t = self._slice_of(add)
        if t == 0 and whole.shape == (self.steps, *self.batch_shape, weights[0].shape[0]):
            self.source = whole
        self.probes: tuple[Tensor, ...] | None = _Probes.apply(self, self.source, *weights, *biases).unbind(0)

    def linear(self, *parts: Tensor, add: Tensor | None = None) -> Tensor | None:
        # runs once per layer and step: kept to the ops it needs
        t, probes = len(self.inputs), self.probes
        if probes is None or t >= self.steps or parts[0].shape[:-1] != self.batch_shape:
            return None
        if self.source is None:
            y = probes[t] if add is None else add + probes[t]
        else:  # P[t] holds add already, if add is what it was made from
            whole, step = self._slice_of(add)
            if whole is not self.source or step != t:
                return None
            y = probes[t]
        self.inputs.append([p.detach() for p in parts])
        if len(self.batch_shape) == 1:
            for x, w_t in zip(parts, self.weights_t, strict=True):
                y = torch.addmm(y, x, w_t)
        else:
            for x, w_t in zip(parts, self.weights_t, strict=True):
                y = y + x.matmul(w_t)
        return y

    def _slice_of(self, add: Tensor | None) -> tuple[Tensor | None, int | None]:
        """(sequence, t) if ``add`` is slice t of a sequence split by :func:`unbind_steps`."""
        entry = self.sequences.get(id(add)) if add is not None else None
        return (entry[1], entry[2]) if entry is not None and entry[0] is add else (None, None)

    def end_forward(self) -> None:
        # the graph holds what backward needs; the step slices would keep whole sequences alive
        self.probes, self.source, self.sequences = None, None, {}


class _Probes(torch.autograd.Function):
    """The probes' node: bias (or zeros) in every step's slot; weight gradients in backward."""

    @staticmethod
    def forward(ctx, hub: ProbeHub, source: Tensor | None, *weights_and_biases: Tensor | None) -> Tensor:
        ctx.hub = hub
        weight, biases = weights_and_biases[0], [b for b in weights_and_biases[hub.n :] if b is not None]
        if source is not None:
            return source.clone() if not biases else source + sum(biases)
        shape = (hub.steps, *hub.batch_shape, weight.shape[0])
        return weight.new_zeros(shape) if not biases else sum(biases).expand(shape).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        hub = ctx.hub
        calls, out = len(hub.inputs), grad.shape[-1]
        rows = math.prod(hub.batch_shape)
        inputs = [[step[i] for step in hub.inputs] for i in range(hub.n)]
        weight_grads = [deferred_weight_grad(grad[:calls], layer_inputs, rows) for layer_inputs in inputs]
        bias_grad = grad[:calls].reshape(-1, out).sum(0) if any(hub.has_bias) else None
        source_grad = grad if ctx.needs_input_grad[1] else None
        return None, source_grad, *weight_grads, *(bias_grad if has else None for has in hub.has_bias)


def deferred_weight_grad(grad: Tensor, inputs: list[Tensor], rows: int) -> Tensor:
    """sum_t grad[t]^T inputs[t]: the weight gradient of a layer that ran once per step, from
    its output gradients (calls, *batch, out) and its inputs (one (*batch, in) per call, ``rows``
    rows each), as a few GEMMs over chunks of ``FLUSH_ROWS`` rows."""
    per_chunk = max(1, FLUSH_ROWS // max(1, rows))
    out, total = grad.shape[-1], None
    for start in range(0, len(inputs), per_chunk):
        chunk = inputs[start : start + per_chunk]
        g_t = grad[start : start + len(chunk)].reshape(-1, out).t()
        x = torch.cat([step.reshape(-1, step.shape[-1]) for step in chunk])
        if total is None:
            total = g_t.mm(x)
        else:  # out= rather than addmm_: FLOP counters see this form
            torch.addmm(total, g_t, x, out=total)
    return total


@dataclass
class _Loop:
    steps: int
    hubs: dict[tuple[nn.Linear, ...], WeightHub | ProbeHub] = field(default_factory=dict)
    sequences: dict[int, tuple[Tensor, Tensor, int]] = field(default_factory=dict)
    """id(step slice) -> (the slice, its whole sequence, t), for slices made by
    :func:`unbind_steps`; holding the slice keeps its id from being reused during the loop."""


_LOOP: ContextVar[_Loop | None] = ContextVar("seqvae_step_loop", default=None)


@contextmanager
def step_loop(steps: int) -> Iterator[None]:
    """Run a time loop of ``steps`` steps: inside it, every :class:`LoopLinear` defers its
    weight gradient to a few GEMMs after the loop (computed when backward reaches its start)."""
    loop = _Loop(steps)
    reset = _LOOP.set(loop)
    try:
        yield
    finally:
        _LOOP.reset(reset)
        for hub in loop.hubs.values():
            hub.end_forward()


def active_loop() -> _Loop | None:
    """The current :func:`step_loop` where in-loop layers may defer: None outside one, without
    autograd, or inside ``torch.compile`` (which computes its own gradients)."""
    if torch.compiler.is_compiling():  # first: Dynamo would break the graph at the ContextVar
        return None
    return _LOOP.get() if torch.is_grad_enabled() else None


def in_step_loop() -> bool:
    """True inside a :func:`step_loop` block, where :class:`LoopLinear` layers defer."""
    return _LOOP.get() is not None


def unbind_steps(sequence: Tensor) -> tuple[Tensor, ...]:
    """``sequence.unbind(0)``: the per-step slices of a (T, ...) tensor made before the loop.

    Inside :func:`step_loop`, a small in-loop layer whose ``add`` is slice t at step t adds the
    whole sequence once instead of a slice per step (see :class:`ProbeHub`)."""
    slices = sequence.unbind(0)
    loop = _LOOP.get()
    if loop is not None and torch.is_grad_enabled():
        for t, piece in enumerate(slices):
            loop.sequences[id(piece)] = (piece, sequence, t)
    return slices


def loop_hub(*layers: nn.Linear, batch_shape=None, add: Tensor | None = None) -> WeightHub | ProbeHub | None:
    """The hub of ``layers`` (one, or several whose outputs are summed) in the current
    :func:`step_loop`, made on first use (a :class:`ProbeHub`, for small layers, needs the
    ``batch_shape`` of their inputs); None when nothing would be deferred: no loop, no
    autograd, a frozen weight, autocast, or inside ``torch.compile``, which computes its own
    gradients. ``add``: what the first call adds to the product (see :class:`ProbeHub`)."""
    loop = active_loop()
    if loop is None:
        return None
    hub = loop.hubs.get(layers)  # modules hash by identity
    if hub is None:  # the checks below hold for the whole loop: made once, not at every step
        size = sum(m.weight.numel() for m in layers)
        if size < DEFER_MIN_ELEMENTS or not all(m.weight.requires_grad for m in layers):
            return None
        if autocast_enabled(layers[0].weight.device.type):
            return None  # the hubs multiply in the weights' own dtype
        weights, biases = [m.weight for m in layers], [m.bias for m in layers]
        if size >= HUB_MIN_ELEMENTS:
            from seqvae.weight_hub import WeightHub  # once per loop and layer group

            hub = WeightHub(weights, biases)
        elif batch_shape is not None:
            hub = ProbeHub(weights, biases, loop.steps, batch_shape, add, loop.sequences)
        else:
            return None
        loop.hubs[layers] = hub
    return hub


def _deferred_product(layers: tuple[nn.Linear, ...], parts: list[Tensor], add: Tensor | None) -> Tensor | None:
    hub = loop_hub(*layers, batch_shape=parts[0].shape[:-1], add=add)
    return None if hub is None else hub.linear(*parts, add=add)


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta, say): nothing is autocast there
        return False


class LoopLinear(nn.Linear):
    """``nn.Linear`` for layers that run once per step of a time loop.

    Same parameters, initialisation and state-dict keys as ``nn.Linear``; inside
    :func:`step_loop` its weight and bias gradients are computed once after the loop.
    ``add`` (same shape as the output) is added to the product in the same call.
    """

    def forward(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        y = _deferred_product((self,), [x], add)
        if y is not None:
            return y
        y = F.linear(x, self.weight, self.bias)
        return y if add is None else y + add


def linear_sum(layers: list[nn.Linear], inputs: list[Tensor], add: Tensor | None = None) -> Tensor:
    """``sum_i layers[i](inputs[i]) (+ add)`` for layers with the same output size.

    Inside :func:`step_loop`, layers with at least ``HUB_MIN_ELEMENTS`` weights together make
    one product of the concatenated inputs with the concatenated weights (one GEMM per step
    instead of one per layer, forward and backward); smaller ones one ``addmm`` per layer into
    the same output. Either way the weight gradients are deferred as for :class:`LoopLinear`.
    """
    y = _deferred_product(tuple(layers), inputs, add)
    if y is not None:
        return y
    out = add
    for layer, x in zip(layers, inputs, strict=True):
        y = F.linear(x, layer.weight, layer.bias)
        out = y if out is None else out + y
    return out



def __getattr__(name: str):
    # seqvae.weight_hub imports this module (it reads the knobs above at each call), so its
    # names are looked up on first use rather than imported here
    if name in ("WeightHub", "_can_pack"):
        from seqvae import weight_hub

        return getattr(weight_hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
