"""In-loop chains (seqvae.fused_chain): one autograd node per step that computes what the modules
one by one compute, values and every gradient, and steps aside where it cannot."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from seqvae import fused
from seqvae.fused import LoopLinear, step_loop, unbind_steps
from seqvae.fused_chain import LoopSequential, run_chain
from seqvae.nn import ClampedLeakyReLU

T, B = 4, 3


def _act(slope: float = 1.0 / 3.0) -> ClampedLeakyReLU:
    return ClampedLeakyReLU(slope=slope)


CHAINS = {
    "mlp": lambda: [LoopLinear(5, 6), _act(), LoopLinear(6, 6), _act(), LoopLinear(6, 4)],
    "leading activation": lambda: [_act(), LoopLinear(5, 6), _act(), LoopLinear(6, 4)],
    "ends in an activation": lambda: [LoopLinear(5, 6), _act(), LoopLinear(6, 4), _act()],
    "two activations in a row": lambda: [LoopLinear(5, 6), _act(), _act(0.5), LoopLinear(6, 4, bias=False)],
}


def _unroll(modules, xs, add=None, fast=True):
    """The chain at each of T steps; the loss reads every step's output (step t weighed t + 1)."""
    seq = tuple(modules)
    outs = []
    with step_loop(T) if fast else torch.enable_grad():
        adds = unbind_steps(add) if add is not None else [None] * T
        for x_t, add_t in zip(xs.unbind(0), adds, strict=True):
            outs.append(run_chain(seq, x_t, add=add_t))
    y = torch.stack(outs)
    return y, (y * torch.arange(1.0, T + 1, dtype=y.dtype).view(T, 1, 1)).square().sum()


def _node_names(y: torch.Tensor) -> list[str]:
    seen, stack, names = set(), [y.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", list(CHAINS))
def test_a_chain_is_one_node_per_step_with_the_values_and_gradients_of_its_modules(name):
    torch.manual_seed(0)
    modules = [m.double() for m in CHAINS[name]()]
    xs = (torch.randn(T, B, 5, dtype=torch.float64) * 4).requires_grad_(True)  # past the clamp at +-3
    y_fast, loss_fast = _unroll(modules, xs)
    y_plain, loss_plain = _unroll(modules, xs, fast=False)
    torch.testing.assert_close(y_fast, y_plain, rtol=0, atol=0)  # the same kernels, in the same order
    names = _node_names(y_fast)
    assert names.count("_ChainStepBackward") == T
    assert not {"AddmmBackward0", "LeakyReluBackward0", "HardtanhBackward0"} & set(names)
    params = [p for m in modules for p in m.parameters()]
    fast = torch.autograd.grad(loss_fast, params + [xs])
    plain = torch.autograd.grad(loss_plain, params + [xs])
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_first_layer_adds_a_precomputed_sequence_and_passes_it_its_gradient():
    torch.manual_seed(1)
    modules = [LoopLinear(5, 6, bias=False).double(), _act(), LoopLinear(6, 4).double()]
    xs = torch.randn(T, B, 5, dtype=torch.float64, requires_grad=True)
    add = torch.randn(T, B, 6, dtype=torch.float64, requires_grad=True)
    params = [p for m in modules for p in m.parameters()]
    fast = torch.autograd.grad(_unroll(modules, xs, add)[1], params + [xs, add])
    plain = torch.autograd.grad(_unroll(modules, xs, add, fast=False)[1], params + [xs, add])
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_activation_gradient_is_zero_exactly_at_the_bounds_as_hardtanh_gives():
    layer, act, out = LoopLinear(1, 1).double(), _act(), LoopLinear(1, 1).double()
    with torch.no_grad():
        layer.weight.fill_(1.0), layer.bias.zero_(), out.weight.fill_(1.0), out.bias.fill_(1.0)
    # pre-activations exactly 3 (the clamp), -9 (leaky -3, the clamp), 0 (leaky's kink), 1, -1
    xs = torch.tensor([3.0, -9.0, 0.0, 1.0, -1.0], dtype=torch.float64).view(1, 5, 1).expand(T, 5, 1).clone()
    xs.requires_grad_(True)
    grad_fast = torch.autograd.grad(_unroll([layer, act, out], xs)[1], xs)[0]
    grad_plain = torch.autograd.grad(_unroll([layer, act, out], xs, fast=False)[1], xs)[0]
    torch.testing.assert_close(grad_fast, grad_plain, rtol=0, atol=0)
    assert grad_fast[0, :2].abs().max() == 0  # at the bounds nothing flows
    assert grad_fast[0, 2] != 0 and grad_fast[0, 3] != 0 and grad_fast[0, 4] != 0


def test_the_callers_input_is_not_overwritten_by_a_leading_activation():
    modules = [_act(), LoopLinear(5, 6), _act(), LoopLinear(6, 4)]
    xs = torch.randn(T, B, 5) * 5
    before = xs.clone()
    _unroll(modules, xs.requires_grad_(True))
    torch.testing.assert_close(xs.detach(), before, rtol=0, atol=0)


def test_a_retained_graph_runs_backward_twice_as_plain_autograd_does():
    torch.manual_seed(2)
    modules = [m.double() for m in CHAINS["mlp"]()]
    xs = torch.randn(T, B, 5, dtype=torch.float64, requires_grad=True)
    for fast in (True, False):
        for m in modules:
            m.zero_grad(set_to_none=True)
        _, loss = _unroll(modules, xs, fast=fast)
        loss.backward(retain_graph=True)
        loss.backward()
        grads = [p.grad.clone() for m in modules for p in m.parameters()]
        if fast:
            fast_grads = grads
    for got, want in zip(fast_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "modules",
    [
        pytest.param(lambda: [LoopLinear(5, 6), nn.Tanh(), LoopLinear(6, 4)], id="an activation without kernels"),
        pytest.param(lambda: [LoopLinear(5, 6), _act(-0.1), LoopLinear(6, 4)], id="a negative slope"),
        pytest.param(lambda: [_act(), LoopLinear(5, 4)], id="one layer"),
        pytest.param(lambda: [LoopLinear(5, 6), _act(), nn.Linear(6, 4)], id="a plain nn.Linear"),
    ],
)
def test_a_chain_that_cannot_be_fused_runs_module_by_module_with_the_same_result(modules):
    torch.manual_seed(3)
    chain = [m.double() for m in modules()]
    xs = torch.randn(T, B, 5, dtype=torch.float64, requires_grad=True)
    y_fast, loss_fast = _unroll(chain, xs)
    assert "_ChainStepBackward" not in _node_names(y_fast)
    y_plain, loss_plain = _unroll(chain, xs, fast=False)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-12, atol=1e-12)


def test_a_module_with_a_forward_hook_is_called_at_every_step():
    chain = CHAINS["mlp"]()
    calls = []
    chain[2].register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    y, _ = _unroll(chain, torch.randn(T, B, 5, requires_grad=True))
    assert "_ChainStepBackward" not in _node_names(y)
    assert calls == [torch.Size([B, 6])] * T


def test_deferral_switched_off_or_a_weight_hub_sized_layer_leaves_the_chain_unfused(monkeypatch):
    chain = [m.double() for m in CHAINS["mlp"]()]
    xs = torch.randn(T, B, 5, dtype=torch.float64, requires_grad=True)
    for knob, value in (("DEFER_MIN_ELEMENTS", float("inf")), ("HUB_MIN_ELEMENTS", 0)):
        with monkeypatch.context() as patch:
            patch.setattr(fused, knob, value)
            assert "_ChainStepBackward" not in _node_names(_unroll(chain, xs)[0])


def test_more_calls_than_steps_fall_back_and_still_get_their_gradients():
    torch.manual_seed(4)
    modules = [m.double() for m in CHAINS["mlp"]()]
    seq = LoopSequential(*modules)
    xs = torch.randn(T + 2, B, 5, dtype=torch.float64, requires_grad=True)

    def loss(fast: bool) -> torch.Tensor:
        with step_loop(T) if fast else torch.enable_grad():
            return sum(seq(x_t).square().sum() for x_t in xs.unbind(0))

    fast = torch.autograd.grad(loss(True), list(seq.parameters()))
    plain = torch.autograd.grad(loss(False), list(seq.parameters()))
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_loop_sequential_keeps_nn_sequentials_state_dict_keys():
    plain = nn.Sequential(nn.Linear(5, 6), _act(), nn.Linear(6, 4))
    seq = LoopSequential(LoopLinear(5, 6), _act(), LoopLinear(6, 4))
    assert list(seq.state_dict()) == list(plain.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    seq.load_state_dict(plain.state_dict())
    x = torch.randn(B, 5)
    torch.testing.assert_close(seq(x), plain(x))  # outside a loop: nn.Sequential


def test_a_finished_graph_frees_the_chain_without_the_cycle_collector():
    seq = tuple(CHAINS["ends in an activation"]())  # the step's output is also what backward reads
    xs = torch.randn(T, B, 5, requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        with step_loop(T):
            outs = [run_chain(seq, x_t) for x_t in xs.unbind(0)]
        assert type(outs[0].grad_fn).__name__ == "_ChainStepBackward"
        alive = weakref.ref(outs[0])
        torch.stack(outs).sum().backward()
        del outs
        assert alive() is None  # no reference cycle through the node's saved tensors
    finally:
        gc.enable()
