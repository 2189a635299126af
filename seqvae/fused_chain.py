"""In-loop chains of small linear layers and activations as one autograd node per step.

An MLP inside a step loop (a posterior's hidden layers, a feature extractor on z_{t-1}) runs a
handful of (B, in) x (in, out) products with B = 32: the arithmetic is a few microseconds, and
plain autograd spends about as much again on each op and its node. Even with deferred weight
gradients (:class:`seqvae.fused.ProbeHub`) a four-layer MLP with clamped leaky ReLUs costs twelve
ops forward and twelve nodes backward per step. :class:`LoopSequential` and :func:`run_chain` run
the whole chain as one node: its forward calls the same kernels (``addmm``, then each
activation's kernels in place) with autograd off, its backward walks the chain once (each
activation's backward from its output, one ``mm`` per layer for the input gradient), and the
weight and bias gradients are deferred to a few GEMMs after the loop, as for every in-loop layer.

How the deferral is wired (as :class:`seqvae.weight_hub.WeightHub`'s): when the loop first runs the
chain, a node takes the layers' weights and biases and outputs a scalar *token* that every
step's node reads and sends no gradient. Autograd runs the token's node only after all its
consumers, so when it runs, every step's backward has recorded its layers' inputs and
pre-activation gradients g_l, and it computes dW_l = sum_t g_l^T x_l and db_l = sum_t g_l.

What can join a chain: :class:`seqvae.fused.LoopLinear` layers and activation modules that
provide ``in_loop_kernels()``, returning ``(forward_, backward_from_output)``: an in-place
forward, and the input gradient from the output gradient and the output (see
:class:`seqvae.nn.ClampedLeakyReLU`). A chain with any other module, a module with forward
hooks, fewer than two layers, a layer outside the probes' size range
(:data:`seqvae.fused.DEFER_MIN_ELEMENTS`, :data:`seqvae.fused.HUB_MIN_ELEMENTS`), an input that is
not (B, in), or a call outside a step loop runs its modules one by one, which computes the same
function. Not twice differentiable inside a step loop; like every in-loop layer, a step keeps
its inputs for backward without a version check, so they must not be changed in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from seqvae import fused


class LoopSequential(nn.Sequential):
    """``nn.Sequential`` of in-loop layers and activations (same children, same state-dict keys)
    that runs as one autograd node per step inside :func:`seqvae.fused.step_loop`."""

    def forward(self, x: Tensor) -> Tensor:
        return run_chain(tuple(self), x)


def run_chain(modules: tuple[nn.Module, ...], x: Tensor, add: Tensor | None = None) -> Tensor:
    """``modules`` applied in order to ``x``, ``add`` (if given) added to the output of the first,
    a :class:`~seqvae.fused.LoopLinear`: one node per step inside a step loop where the chain
    qualifies (see the module docstring), else one module at a time. ``modules`` must be the
    same tuple of modules at every step (the chain's deferred gradients are keyed by it)."""
    hub = _chain_hub(modules, x)
    if hub is not None:
        y = hub.step(x, add)
        if y is not None:
            return y
    for i, module in enumerate(modules):
        x = module(x, add=add) if i == 0 and add is not None else module(x)
    return x


class _Op:
    """One link of a chain: a linear layer (index into the chain's layers) or an activation."""

    __slots__ = ("layer", "forward_", "backward")

    def __init__(self, layer: int | None = None, forward_=None, backward=None) -> None:
        self.layer, self.forward_, self.backward = layer, forward_, backward


def _plan(modules: Sequence[nn.Module]) -> tuple[list[_Op], list[nn.Linear]] | None:
    """The chain's links and its layers, or None where some module cannot join a fused chain."""
    ops, layers = [], []
    for module in modules:
        if module._forward_hooks or module._forward_pre_hooks:
            return None  # run module by module, so that the hooks see every call
        if isinstance(module, fused.LoopLinear):
            if not fused.DEFER_MIN_ELEMENTS <= module.weight.numel() < fused.HUB_MIN_ELEMENTS:
                return None  # left to plain autograd, or a weight hub's packed products serve it better
            ops.append(_Op(layer=len(layers)))
            layers.append(module)
            continue
        kernels = getattr(module, "in_loop_kernels", None)
        kernels = kernels() if callable(kernels) else None
        if kernels is None:
            return None
        ops.append(_Op(forward_=kernels[0], backward=kernels[1]))
    # one layer: the node's Python cost exceeds the few native ops it saves (a posterior head of
    # an activation and one layer trained 6 % slower fused)
    return (ops, layers) if len(layers) >= 2 else None


def _chain_hub(modules: tuple[nn.Module, ...], x: Tensor) -> _ChainHub | None:
    loop = fused.active_loop()
    if loop is None or x.dim() != 2:
        return None
    hub = loop.hubs.get(modules)
    if hub is None:  # decided once per loop and chain
        plan = _plan(modules)
        weights = [] if plan is None else [layer.weight for layer in plan[1]]
        if plan is None or not all(w.requires_grad for w in weights) or fused.autocast_enabled(x.device.type):
            hub = _Unfused()
        else:
            hub = _ChainHub(*plan, steps=loop.steps, rows=x.shape[0])
        loop.hubs[modules] = hub
    return None if isinstance(hub, _Unfused) else hub


class _Unfused:
    """A loop's record that a chain runs module by module (so the check runs once per loop)."""

    def end_forward(self) -> None:
        pass


class _ChainHub:
    """One chain in one loop: its links, its token, and what each step's backward recorded."""

    def __init__(self, ops: list[_Op], layers: list[nn.Linear], steps: int, rows: int) -> None:
        self.ops, self.steps, self.rows, self.calls = ops, steps, rows, 0
        self.weights = [layer.weight.detach() for layer in layers]
        self.weights_t = [w.t() for w in self.weights]
        self.biases = [None if layer.bias is None else layer.bias.detach() for layer in layers]
        self.first_is_layer = ops[0].layer is not None
        # per link, what the step's forward and backward need, looked up once per loop
        self.forward_links = [
            (op.layer, self.weights_t[op.layer], self.biases[op.layer], None) if op.layer is not None
            else (None, None, None, op.forward_)
            for op in ops
        ]  # fmt: skip
        self.backward_links = [
            (position, op.layer, None if op.layer is None else self.weights[op.layer], op.backward)
            for position, op in reversed(list(enumerate(ops)))
        ]
        self.layer_positions = [position for position, op in enumerate(ops) if op.layer is not None]
        self.grads: list[list[Tensor]] = []  # per step's backward: each layer's g_l (rows, out_l)
        self.inputs: list[list[Tensor]] = []  # ... and each layer's input (rows, in_l)
        params = [layer.weight for layer in layers] + [layer.bias for layer in layers]
        self.token: Tensor | None = _ChainToken.apply(self, *params)

    def step(self, x: Tensor, add: Tensor | None) -> Tensor | None:
        """The chain on this step's ``x`` (``add`` added to the first layer's product), or None
        where the loop has run more calls than steps, ``x`` has another number of rows, or
        ``add`` comes without a leading layer (the caller then runs the modules one by one)."""
        if self.token is None or self.calls >= self.steps or x.shape[0] != self.rows:
            return None
        if add is not None and not self.first_is_layer:
            return None
        self.calls += 1
        return _ChainStep.apply(self, x, add, self.token)

    def end_forward(self) -> None:
        self.token = None  # the graph holds it


class _ChainToken(torch.autograd.Function):
    """The chain's token; in backward, after every step's, the weight and bias gradients."""

    @staticmethod
    def forward(ctx, hub: _ChainHub, *params: Tensor | None) -> Tensor:
        ctx.hub = hub
        return hub.weights[0].new_zeros(())

    @staticmethod
    def backward(ctx, _token_grad: Tensor):
        hub = ctx.hub
        grads, inputs, hub.grads, hub.inputs = hub.grads, hub.inputs, [], []
        weight_grads, bias_grads = [None] * len(hub.weights), [None] * len(hub.weights)
        if grads:
            for layer in range(len(hub.weights)):
                g = torch.stack([step[layer] for step in grads])
                weight_grads[layer] = fused.deferred_weight_grad(g, [step[layer] for step in inputs], hub.rows)
                if hub.biases[layer] is not None:
                    bias_grads[layer] = g.reshape(-1, g.shape[-1]).sum(0)
        return None, *weight_grads, *bias_grads


class _ChainStep(torch.autograd.Function):
    """One step of a chain: forward with the modules' own kernels, backward in one walk."""

    @staticmethod
    def forward(ctx, hub: _ChainHub, x: Tensor, add: Tensor | None, token: Tensor) -> Tensor:
        # saved[i]: what backward reads of link i: a layer's input, an activation's output
        saved, y, owned = [], x, False  # owned: y is a product made here, free to overwrite
        for layer, w_t, bias, kernel in hub.forward_links:
            if kernel is not None:  # the caller's input and saved outputs are not overwritten
                y = kernel(y if owned else y.clone())
                owned = False
            else:
                if layer == 0 and add is not None:
                    bias = add if bias is None else add + bias
                saved.append(y)
                y = y.mm(w_t) if bias is None else torch.addmm(bias, y, w_t)
                owned = True
                continue
            saved.append(y)
        if saved[-1] is y:  # the output itself would tie the graph into a reference cycle
            saved[-1] = y.detach()
        ctx.hub, ctx.saved, ctx.has_add = hub, saved, add is not None
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        hub, saved = ctx.hub, ctx.saved
        layer_grads: list[Tensor | None] = [None] * len(hub.weights)
        g = grad
        for position, layer, weight, kernel in hub.backward_links:
            if kernel is not None:
                g = kernel(g, saved[position])
                continue
            layer_grads[layer] = g
            if position > 0 or ctx.needs_input_grad[1]:
                g = g.mm(weight)
        hub.grads.append(layer_grads)
        hub.inputs.append([saved[position] for position in hub.layer_positions])
        grad_x = g if ctx.needs_input_grad[1] else None
        grad_add = layer_grads[0] if ctx.has_add and ctx.needs_input_grad[2] else None
        return None, grad_x, grad_add, None  # None for the token: its node still runs after this one
