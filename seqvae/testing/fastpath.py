"""The ``fast-path`` property: the engine's fast step loop computes what plain autograd does.

The fast path belongs to the slot contract, not to a plugin's choice of layer class: a layer
that runs once per step inside the loop is a :class:`seqvae.fused.LoopLinear` (or goes through
:func:`seqvae.fused.linear_sum`), whose weight gradients are deferred to a few GEMMs after the
loop; ``SequenceModel.fast_path = False`` runs the same loop under plain autograd. A decoder
with parallel latents has no step loop: both runs are then the same computation, which the
property still compares (it must not fail, and nothing runs "inside the loop").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from seqvae import fused
from seqvae.model import SequenceModel
from seqvae.objective import compute_terms
from seqvae.testing.batches import make_batch
from seqvae.testing.properties import Failure
from seqvae.testing.subjects import Subject

RTOL, ATOL = 1e-9, 1e-10
"""float64: the paths differ only in the order of their sums."""


@contextmanager
def hub_threshold(elements: float) -> Iterator[None]:
    """In-loop layers of at least ``elements`` weights go through :mod:`seqvae.fused`'s weight
    hubs, smaller ones through its probes."""
    saved = fused.HUB_MIN_ELEMENTS
    fused.HUB_MIN_ELEMENTS = elements
    try:
        yield
    finally:
        fused.HUB_MIN_ELEMENTS = saved


def _objective(model: SequenceModel, s: Subject, u: Tensor, x: Tensor, mask: Tensor, noise: Tensor | None):
    """The per-sequence ELBO and a loss that every term reaches: the negative ELBO minus every
    auxiliary objective's masked term at weight 1 (whatever its schedule)."""
    trace = model(u, x, mask, noise)
    elbo = compute_terms(model, trace, s.comp, training=False).elbo
    loss = -elbo.mean()
    for term in model.aux.values():
        loss = loss - (term(trace) * trace.mask).sum(0).mean()
    return elbo, loss


def _run(model: SequenceModel, s: Subject, batch: tuple) -> tuple[Tensor, dict[str, Tensor | None]]:
    model.zero_grad(set_to_none=True)
    elbo, loss = _objective(model, s, *batch)
    if loss.requires_grad:
        loss.backward()
    return elbo.detach(), {name: p.grad for name, p in model.named_parameters()}


def _plain_linears_in_loop(model: SequenceModel, s: Subject, batch: tuple) -> list[str]:
    """Names of plain ``nn.Linear`` layers called inside the step loop (with autograd on)."""
    seen: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not isinstance(module, fused.LoopLinear):
            def hook(_module, _inputs, name=name):
                if fused.in_step_loop() and torch.is_grad_enabled() and name not in seen:
                    seen.append(name)
            hooks.append(module.register_forward_pre_hook(hook))
    try:
        _objective(model, s, *batch)
    finally:
        for handle in hooks:
            handle.remove()
    return seen


def check_fast_path(s: Subject) -> None:
    """In float64 and training mode, on a padded batch (lengths 5, 3, 2) with fixed posterior
    noise: the per-sequence ELBO and the gradient, for every parameter, of the negative ELBO
    minus every auxiliary term (weight 1) are the same with the fast path off
    (``model.fast_path = False``, plain autograd) as with it on, through the in-loop layers'
    probes and through their weight hubs (rtol 1e-9, atol 1e-10); and no plain ``nn.Linear``
    runs inside the step loop (in-loop layers are ``seqvae.fused.LoopLinear``)."""
    model = s.build().double().train()
    u, x, mask = (t.double() for t in make_batch(model, 5, 3, s.device, [5, 3, 2]))
    noise = model.draw_noise(5, 3, s.device, torch.float64)
    batch = (u, x, mask, noise)
    plain = _plain_linears_in_loop(model, s, batch)
    if plain:
        raise Failure(f"{', '.join(plain)} ({s.describe(plain[0])}) run inside the step loop as plain nn.Linear, "
                      "outside the fast path: build in-loop layers as seqvae.fused.LoopLinear (an nn.Linear with "
                      "the same parameters; seqvae.nn.mlp(..., linear=LoopLinear) for an MLP)")  # fmt: skip
    model.fast_path = False
    try:
        want_elbo, want = _run(model, s, batch)
    finally:
        model.fast_path = True
    problems = []
    for path, hub_min in (("probes", fused.HUB_MIN_ELEMENTS), ("weight hubs", 0)):
        with hub_threshold(hub_min):
            elbo, grads = _run(model, s, batch)
        if not torch.allclose(elbo, want_elbo, rtol=RTOL, atol=ATOL):
            problems.append(f"ELBO {elbo.tolist()} with the fast path ({path}), {want_elbo.tolist()} without")
        for name, grad in grads.items():
            ref = want[name]
            if (grad is None) != (ref is None):
                problems.append(f"{name} ({s.describe(name)}) gets a gradient only "
                                f"{'without' if grad is None else 'with'} the fast path ({path})")
            elif grad is not None and not torch.allclose(grad, ref, rtol=RTOL, atol=ATOL):
                diff = float((grad - ref).abs().max())
                problems.append(f"{name} ({s.describe(name)}): gradient differs by up to {diff:.3g} with "
                                f"the fast path ({path})")  # fmt: skip
    if problems:
        shown = problems[:6] + ([f"... and {len(problems) - 6} more"] if len(problems) > 6 else [])
        raise Failure("the fast path and plain autograd disagree: " + "; ".join(shown))
