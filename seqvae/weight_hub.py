"""The weight hub: deferred weight gradients for large in-loop layers, packed weights on CPU.

How it is wired into autograd: for each layer (or group of layers whose outputs are summed,
:func:`seqvae.fused.linear_sum`) and loop, a :class:`WeightHub` makes an autograd node that
takes the weights and biases and outputs a scalar *token*; every step's product reads the token
(and sends it no gradient). Autograd runs a node only after all its consumers, so the hub's
backward runs after every step's backward and finds all (g_t, x_t) collected; it folds them
into the weight gradient every ``seqvae.fused.FLUSH_ROWS`` rows, so only a few steps are held.

On CPU the hub also reorders a large weight (``seqvae.fused.PACK_MIN_ELEMENTS`` elements or
more) once per loop into oneDNN's blocked layout (and its transpose once per backward), so that
the T skinny products of the loop, forward and backward, skip the repacking a plain GEMM call
does every time.

:func:`seqvae.fused.loop_hub` decides which layers come here (``seqvae.fused.HUB_MIN_ELEMENTS``
weights or more); the knobs stay in :mod:`seqvae.fused` and are read at each call, so that
setting them there takes effect.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from seqvae import fused


def _can_pack(weight: Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class _PackedWeight:
    """``weight`` (out, in) reordered for products x @ weight^T with x of ``rows`` rows."""

    __slots__ = ("packed",)

    def __init__(self, weight: Tensor, rows: int) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)

    def linear(self, x: Tensor, bias: Tensor | None, add: Tensor | None) -> Tensor:
        if add is None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(x, add.contiguous(), self.packed, bias, "add")


class WeightHub:
    """The (weight, bias) pairs of one or more layers in one loop.

    :meth:`linear` runs once per step on the concatenation of the layers' inputs, as one
    product with the weights concatenated along their input dimension; the weight and bias
    gradients are deferred to one GEMM when backward reaches the loop's start.
    """

    def __init__(self, weights: list[Tensor], biases: list[Tensor | None]) -> None:
        self.weights = [w.detach() for w in weights]
        self.needs_grad = [w.requires_grad for w in weights]
        self.n = len(weights)
        self.has_bias = [b is not None for b in biases]
        present = [b.detach() for b in biases if b is not None]
        self.bias = None if not present else present[0] if len(present) == 1 else sum(present)
        self.grads: list[Tensor] = []  # per step: dL/d(output), (rows, out)
        self.inputs: list[tuple[Tensor, ...]] = []  # per step: the layers' inputs, (rows, in_i)
        self.rows = 0  # rows recorded since the last flush
        self.weight_grads: list[Tensor | None] = [None] * self.n
        self.bias_grad: Tensor | None = None
        self.can_pack = _can_pack(self.weights[0]) and sum(w.numel() for w in weights) >= fused.PACK_MIN_ELEMENTS
        self._weight: Tensor | None = None
        self.packed: _PackedWeight | None = None
        self.packed_t: _PackedWeight | None = None
        self.token = _Hub.apply(self, *weights, *biases)

    @property
    def weight(self) -> Tensor:
        """The weights concatenated along their input dimension (made once, when first used)."""
        if self._weight is None:
            self._weight = self.weights[0] if self.n == 1 else torch.cat(self.weights, 1)
        return self._weight

    def linear(self, *parts: Tensor, add: Tensor | None = None) -> Tensor:
        """``[parts] @ weight^T + bias (+ add)`` for one step: ``parts`` are the layers' inputs
        (..., in_i), in the order of the weights."""
        return _StepLinear.apply(add, self.token, self, *parts)

    def end_forward(self) -> None:
        """The loop's forward is over: drop what only the forward products need."""
        self.packed = None
        if self.can_pack:
            self._weight = None

    def _forward(self, x: Tensor, add: Tensor | None) -> Tensor:
        if self.can_pack and x.dim() == 2:
            if self.packed is None:
                self.packed = _PackedWeight(self.weight, x.shape[0])
                self._weight = None  # the packed copy replaces it
            return self.packed.linear(x.contiguous(), self.bias, add)
        y = F.linear(x, self.weight, self.bias)
        return y if add is None else y.add_(add)

    def record(self, grad: Tensor, parts: tuple[Tensor, ...]) -> None:
        """Keep one step's output gradient and inputs; every ``seqvae.fused.FLUSH_ROWS`` rows, add their
        weight gradient to the running sums, so that only a few steps are held at a time."""
        self.grads.append(grad)
        self.inputs.append(parts)
        self.rows += grad.shape[0]
        if self.rows >= fused.FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Add the weight and bias gradients of the recorded steps as one product per layer."""
        if not self.grads:
            return
        g_t = torch.cat(self.grads).t()
        for i in range(self.n):
            if not self.needs_grad[i]:
                continue
            x = torch.cat([step[i] for step in self.inputs])
            if self.weight_grads[i] is None:
                self.weight_grads[i] = g_t.mm(x)
            else:
                torch.addmm(self.weight_grads[i], g_t, x, out=self.weight_grads[i])
        if any(self.has_bias):
            self.bias_grad = g_t.sum(1) if self.bias_grad is None else self.bias_grad.add_(g_t.sum(1))
        self.grads, self.inputs, self.rows = [], [], 0

    def _grad_input(self, grad: Tensor) -> Tensor:
        if self.can_pack and grad.dim() == 2:
            if self.packed_t is None:  # transposed straight from the parameters: one copy
                self.packed_t = _PackedWeight(torch.cat([w.t() for w in self.weights]), grad.shape[0])
            return self.packed_t.linear(grad.contiguous(), None, None)
        return grad.matmul(self.weight)


class _Hub(torch.autograd.Function):
    """Autograd node that runs after every step's backward: it finishes the weight gradients."""

    @staticmethod
    def forward(ctx, hub: WeightHub, *weights_and_biases: Tensor | None) -> Tensor:
        ctx.hub = hub
        return weights_and_biases[0].new_zeros(())

    @staticmethod
    def backward(ctx, _token_grad: Tensor):
        hub = ctx.hub
        hub.flush()
        weight_grads, bias_grad = hub.weight_grads, hub.bias_grad
        hub.weight_grads, hub.bias_grad, hub.packed_t, hub._weight = [None] * hub.n, None, None, None
        bias_grads = [bias_grad if has else None for has in hub.has_bias]
        return None, *weight_grads, *bias_grads


class _StepLinear(torch.autograd.Function):
    """One step's product of the hub's weights with ``parts``, the layers' inputs, which are
    concatenated only for the product: the step saves the parts it was given, no copy."""

    @staticmethod
    def forward(ctx, add: Tensor | None, token: Tensor, hub: WeightHub, *parts: Tensor) -> Tensor:
        ctx.save_for_backward(*parts)
        ctx.hub = hub
        ctx.has_add = add is not None
        return hub._forward(parts[0] if len(parts) == 1 else torch.cat(parts, -1), add)

    @staticmethod
    def backward(ctx, grad: Tensor):
        parts = ctx.saved_tensors
        hub = ctx.hub
        hub.record(grad.reshape(-1, grad.shape[-1]), tuple(p.reshape(-1, p.shape[-1]) for p in parts))
        grad_parts = [None] * len(parts)
        if any(ctx.needs_input_grad[3:]):
            grad_x = hub._grad_input(grad)
            grad_parts = grad_x.split([p.shape[-1] for p in parts], -1) if len(parts) > 1 else [grad_x]
        grad_add = grad if ctx.has_add and ctx.needs_input_grad[0] else None
        return grad_add, None, None, *grad_parts  # None for the token: the hub still runs after every step
