"""The properties every composition and component must have: one function per property.

Every check builds fresh tiny models from the subject, draws its data from the model's own
likelihood (``likelihood.sample`` of random parameters, so class indices, bits and reals all
come out in the stored format), runs with the global RNG forked and seeded (the caller's RNG
state is left as it was), and raises :class:`~seqvae.testing.subjects.ConformanceError` naming
the subject, the property, and the component the evidence points at.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import Tensor

from seqvae import fused
from seqvae.checkpoint import model_from_checkpoint
from seqvae.model import SequenceModel, Trace
from seqvae.objective import compute_terms
from seqvae.slots import Component
from seqvae.testing.batches import lengths_for, make_batch, posterior_noise
from seqvae.testing.fastpath import check_fast_path, hub_threshold
from seqvae.testing.properties import Failure, Property
from seqvae.testing.subjects import ConformanceError, ConformanceSkip, Subject, seeded

SIZES = ((1, 1), (5, 2), (7, 3))
"""(steps, batch) pairs of the shape check."""
ATOL, RTOL = 1e-4, 1e-4
"""Tolerances of comparisons that may reorder float sums (one sequence alone vs in a batch)."""


@dataclass(frozen=True)
class Check(Property):
    """One property of a composition; calling it on a subject raises ConformanceError if it
    does not hold, naming the component a crash came from."""

    def __call__(self, subject: Subject) -> None:
        try:
            with seeded(0, subject.device):
                self.fn(subject)
        except Failure as failure:
            raise ConformanceError(subject.label, {self.name: str(failure)}) from None
        except (ConformanceError, ConformanceSkip):
            raise
        except Exception as error:
            detail = f"raised {type(error).__name__}: {error}{_culprit(error, subject)}"
            raise ConformanceError(subject.label, {self.name: detail}) from error


# --------------------------------------------------------------------------- helpers


def _aux_terms(model: SequenceModel, trace: Trace) -> dict[str, Tensor]:
    """Each auxiliary objective's masked per-sequence term (B,), whatever its weight (the
    engine skips switched-off ones; the suite checks them all)."""
    return {key: (term(trace) * trace.mask).sum(0) for key, term in model.aux.items()}


def _per_sequence(model: SequenceModel, trace: Trace, subject: Subject) -> dict[str, Tensor]:
    """The masked per-sequence ELBO (beta 1, no auxiliary terms) and each auxiliary term (B,)."""
    out = {"ELBO": compute_terms(model, trace, subject.comp, training=False).elbo}
    out.update({f"auxiliary term {k!r}": v for k, v in _aux_terms(model, trace).items()})
    return out


def _close(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs() <= ATOL + RTOL * b.abs()


def _expect_shape(value: Tensor | None, shape: tuple[int, ...], what: str, blame: str) -> None:
    """``blame`` names the component that produced ``value`` (empty: the engine)."""
    blame = f"; {blame}" if blame else ""
    if value is None:
        raise Failure(f"{what}: expected a tensor of shape {shape}, got None{blame}")
    if tuple(value.shape) != shape:
        raise Failure(f"{what}: expected shape {shape}, got {tuple(value.shape)}{blame}")
    if not torch.isfinite(value).all():
        raise Failure(f"{what}: not finite ({int((~torch.isfinite(value)).sum())} values){blame}")


def _culprit(error: BaseException, subject: Subject) -> str:
    """The innermost component whose method is on the traceback, if any."""
    found, tb = None, error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Component):
            found = owner
        tb = tb.tb_next
    if found is None:
        return ""
    provider = subject.provider(found.slot, found.name)
    return f" (raised inside {found.slot} {found.name!r}, {provider})"


# --------------------------------------------------------------------------- the checks


def check_shapes(s: Subject) -> None:
    """For (T, B) in (1, 1), (5, 2), (7, 3), with rows of decreasing length: emission params
    (T, B, P) with P = likelihood.param_dim(D); likelihood.log_prob (T, B), likelihood.sample
    (T, B, D), input_embedding (T, B, E); with latents z, posterior and prior (mu, logvar)
    (T, B, Z), cond (T, B, decoder.cond_dim), summary (T, B, encoder.summary_dim) when declared,
    a flow posterior's log q(z) (T, B);
    every auxiliary term (T, B); per-sequence log p(x) and KL (B,) and a scalar training loss.
    Everything finite."""
    model = s.build().eval()
    D, Z, P = model.x_dim, model.z_dim, model.likelihood.param_dim(model.x_dim)
    for T, B in SIZES:
        u, x, mask = make_batch(model, T, B, s.device, lengths_for(T, B))
        with torch.no_grad():
            trace = model(u, x, mask)
            at = f" (T={T}, B={B})"
            lik, dec = s.describe("likelihood"), s.describe("decoder")
            _expect_shape(trace.params, (T, B, P), "emission parameters" + at, dec)
            lik_sample = model.likelihood.sample(trace.params)
            _expect_shape(model.likelihood.log_prob(trace.params, x), (T, B), "log_prob" + at, lik)
            _expect_shape(lik_sample, (T, B, D), "likelihood.sample" + at, lik)
            embedded = model.likelihood.input_embedding(D, 5).to(s.device)(x)
            _expect_shape(embedded, (T, B, 5), "input_embedding(x_dim, 5)" + at, lik)
            if model.decoder.uses_latent:
                enc, prior = s.describe("encoder"), s.describe("prior")
                _expect_shape(trace.z, (T, B, Z), "z" + at, enc)
                _expect_shape(trace.cond, (T, B, model.decoder.cond_dim), "cond" + at, dec)
                _expect_shape(trace.post_mu, (T, B, Z), "posterior mu" + at, enc)
                _expect_shape(trace.post_logvar, (T, B, Z), "posterior logvar" + at, enc)
                _expect_shape(trace.prior_mu, (T, B, Z), "prior mu" + at, prior)
                _expect_shape(trace.prior_logvar, (T, B, Z), "prior logvar" + at, prior)
                if trace.post_log_prob is not None:
                    _expect_shape(trace.post_log_prob, (T, B), "flow log q(z)" + at, "model.encoder.flow")
                summary_dim = model.encoder.summary_dim
                if summary_dim or trace.summary is not None:
                    _expect_shape(trace.summary, (T, B, summary_dim), "encoder summary" + at, enc)
            for key, term in model.aux.items():
                what = f"auxiliary term {key!r}" + at
                _expect_shape(term(trace), (T, B), what, s.describe(f"aux.{key}"))
        terms = compute_terms(model, trace, s.comp, training=True)
        _expect_shape(terms.log_px, (B,), "per-sequence log p(x)" + at, lik)
        _expect_shape(terms.kl, (B,), "per-sequence KL" + at, s.describe("prior"))
        _expect_shape(terms.loss, (), "training loss" + at, "")


PADDING_FIELDS = (
    ("cond", "decoder"), ("post_mu", "encoder"), ("post_logvar", "encoder"), ("prior_mu", "prior"),
    ("prior_logvar", "prior"), ("z", "encoder"), ("params", "decoder"), ("log_prob", "likelihood"),
    ("summary", "encoder"), ("post_log_prob", "encoder"),
)  # fmt: skip
"""Per-step quantities compared to locate a padding leak, in the order they arise in a step."""


def check_padding(s: Subject) -> None:
    """Three sequences of real lengths 6, 3 and 1 in one batch of 9 steps, every padded step
    of u and x holding garbage and mask 0, posterior noise fixed: each sequence's masked ELBO
    and masked auxiliary terms, and on its real steps cond, posterior and prior (mu, logvar),
    z, a flow posterior's log q(z), emission params, log_prob and the encoder's summary, equal
    those of the same sequence run alone, unpadded, with the same noise (atol 1e-4 + rtol 1e-4); the encoder's summary
    is exactly zero on padding."""
    model = s.build().eval()
    lengths, steps = [6, 3, 1], 9
    u, x, mask = make_batch(model, steps, len(lengths), s.device, lengths)
    noise = posterior_noise(model, steps, len(lengths), s.device)
    with torch.no_grad():
        padded = model(u, x, mask, noise)
        got = _per_sequence(model, padded, s)
        refs, changed = [], []
        for b, length in enumerate(lengths):
            rows = slice(b, b + 1)
            ref_noise = None if noise is None else noise.part(length, rows)
            ref = model(u[:length, rows], x[:length, rows], mask[:length, rows], ref_noise)
            refs.append(ref)
            for key, value in _per_sequence(model, ref, s).items():
                if not _close(got[key][b], value[0]):
                    alone, batched = float(value[0]), float(got[key][b])
                    changed.append(f"{key} of sequence {b} (length {length}): {alone:.6g} alone, "
                                   f"{batched:.6g} with padding")  # fmt: skip
        first = _first_difference(model, padded, refs, lengths, s)
    if changed or first:
        what = "; ".join(changed) if changed else "per-step quantities of real steps"
        if first is None:
            aux = ", ".join(s.describe(f"aux.{key}") for key in model.aux)
            first = f"No per-step quantity differs, so look at {aux or 'the masking'}."
        raise Failure(f"garbage padding (mask 0) and batching with other sequences changed "
                      f"{what}. {first}")  # fmt: skip
    if padded.summary is not None:
        on_padding = padded.summary[mask == 0]
        if (on_padding != 0).any():
            raise Failure(f"the encoder's summary is not zero on padding (max |value| "
                          f"{float(on_padding.abs().max()):.3g}); {s.describe('encoder')}")


def _field(model: SequenceModel, trace: Trace, name: str) -> Tensor | None:
    if name == "log_prob":
        return model.likelihood.log_prob(trace.params, trace.x)
    return getattr(trace, name)


def _first_difference(
    model: SequenceModel, padded: Trace, refs: list[Trace], lengths: list[int], s: Subject
) -> str | None:
    """Which per-step quantity differs first (earliest step, then order within a step)."""
    best = None
    for b, (ref, length) in enumerate(zip(refs, lengths, strict=True)):
        for order, (name, slot) in enumerate(PADDING_FIELDS):
            got, want = _field(model, padded, name), _field(model, ref, name)
            if got is None or want is None:
                continue
            bad = ~_close(got[:length, b], want[:, 0])
            bad = bad.flatten(1).any(1) if bad.dim() > 1 else bad
            if bad.any():
                key = (int(bad.nonzero()[0]), order)
                if best is None or key < best[0]:
                    best = (key, b, name, slot, length)
    if best is None:
        return None
    (step, _), b, name, slot, length = best
    return (f"The first per-step difference is in {name} at step {step} of sequence {b} "
            f"(length {length}): look at {s.describe(slot)}.")  # fmt: skip


def check_seed(s: Subject) -> None:
    """Two runs from the same seed (build the model, draw a padded batch, a training-mode
    forward pass with the posterior noise drawn from the RNG, the training loss, then a
    3-step sample in eval mode) give bitwise identical emission params, z, ELBO, loss and
    samples (on CUDA: within 1e-6)."""

    def once() -> dict[str, Tensor]:
        model = s.build(seed=1234).train()
        u, x, mask = make_batch(model, 5, 2, s.device, [5, 3])
        trace = model(u, x, mask)
        terms = compute_terms(model, trace, s.comp, training=True)
        out = {"emission parameters": trace.params, "ELBO": terms.elbo, "training loss": terms.loss}
        if trace.z is not None:
            out["z"] = trace.z
        out["samples"] = model.eval().sample(2, 3, device=s.device)
        return {key: value.detach() for key, value in out.items()}

    first, second = once(), once()
    exact = not str(s.device).startswith("cuda")
    differ = [
        key for key in first
        if not (torch.equal(first[key], second[key]) if exact
                else torch.allclose(first[key], second[key], rtol=1e-6, atol=1e-6))
    ]  # fmt: skip
    if differ:
        raise Failure(f"two runs from the same seed differ in: {', '.join(differ)} (a component "
                      "draws randomness outside torch's global RNG, or keeps state between calls)")


def check_gradients(s: Subject) -> None:
    """In training mode on a padded batch (lengths 5, 3, 2): every trainable parameter outside
    ``model.aux`` gets a finite, not identically zero gradient from the negative ELBO alone
    (beta 1, no auxiliary terms); every trainable parameter of auxiliary objective KEY gets a
    finite, not identically zero gradient from its own masked term alone (whatever its weight
    schedule); and the training loss at update 0 gives no non-finite gradient."""
    model = s.build().train()
    u, x, mask = make_batch(model, 5, 3, s.device, [5, 3, 2])
    trace = model(u, x, mask)
    terms = compute_terms(model, trace, s.comp, training=False)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    core = {name: p for name, p in params.items() if not name.startswith("aux.")}
    problems = _gradient_problems(-terms.elbo.mean(), core, "the negative ELBO", s)
    for key, term in _aux_terms(model, trace).items():
        own = {name: p for name, p in params.items() if name.startswith(f"aux.{key}.")}
        problems += _gradient_problems(-term.mean(), own, f"its own term (model.aux.{key})", s)
    loss = compute_terms(model, trace, s.comp, update=0, training=True).loss
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        problems += [
            f"{name} ({s.describe(name)}): non-finite gradient from the training loss"
            for name, g in zip(params, grads, strict=True)
            if g is not None and not torch.isfinite(g).all()
        ]  # fmt: skip
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise Failure("; ".join(shown))


def _gradient_problems(
    loss: Tensor, params: dict[str, Tensor], source: str, s: Subject
) -> list[str]:
    if not params:
        return []
    if loss.requires_grad:
        tensors = list(params.values())
        grads = torch.autograd.grad(loss, tensors, allow_unused=True, retain_graph=True)
    else:
        grads = (None,) * len(params)
    problems = []
    for name, grad in zip(params, grads, strict=True):
        if grad is None:
            problem = "no gradient"
        elif not torch.isfinite(grad).all():
            problem = "a non-finite gradient"
        elif not grad.any():
            problem = "an identically zero gradient"
        else:
            continue
        problems.append(f"{name} ({s.describe(name)}) gets {problem} from {source}")
    return problems


def check_save_load(s: Subject) -> None:
    """A checkpoint dict like ``seqvae train`` writes (composition, x_dim, model state dict)
    goes through torch.save and torch.load(weights_only=True); the model rebuilt from it by
    ``model_from_checkpoint`` (initialised from another seed, then loaded strictly) gives
    bitwise identical emission params, per-sequence ELBO and auxiliary terms on the same batch
    and noise, and identical samples from the same seed."""
    model = s.build(seed=0).eval()
    payload = {"name": s.comp.name, "composition": s.comp.to_dict(), "x_dim": s.x_dim,
               "model": model.state_dict()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, map_location=s.device, weights_only=True)
    except Exception as error:
        raise Failure(f"the checkpoint does not load with torch.load(weights_only=True): "
                      f"{error}") from None  # fmt: skip
    torch.manual_seed(1)  # the rebuilt model starts from other weights
    try:
        fresh, _ = model_from_checkpoint(loaded, s.registry, source=f"<checkpoint of {s.label}>")
    except Exception as error:
        raise Failure(f"rebuilding the model from its checkpoint failed: {type(error).__name__}: "
                      f"{error}{_culprit(error, s)}") from None  # fmt: skip
    fresh = fresh.to(s.device).eval()
    u, x, mask = make_batch(model, 6, 2, s.device, [6, 4])
    noise = posterior_noise(model, 6, 2, s.device)
    differ = []
    with torch.no_grad():
        before, after = model(u, x, mask, noise), fresh(u, x, mask, noise)
        pairs = {"emission parameters": (before.params, after.params)}
        seq_before, seq_after = _per_sequence(model, before, s), _per_sequence(fresh, after, s)
        pairs.update({key: (seq_before[key], seq_after[key]) for key in seq_before})
        samples = []
        for m in (model, fresh):
            torch.manual_seed(7)
            samples.append(m.sample(2, 4, device=s.device))
        pairs["samples"] = tuple(samples)
    differ = [key for key, (a, b) in pairs.items() if not torch.equal(a, b)]
    if differ:
        raise Failure(f"the reloaded model differs in: {', '.join(differ)} (state kept outside "
                      "parameters and buffers, or options that do not survive the composition "
                      "round trip)")


def check_sampling(s: Subject) -> None:
    """In eval mode, ``model.sample(n, steps)`` for (n, steps) in (1, 1) and (3, 6) returns
    a finite floating tensor (steps, n, D), and the samples are valid observations: the
    model's ELBO on them (fed back as u_t = x_{t-1}, u_1 = 0) is finite."""
    model = s.build().eval()
    for n, steps in ((1, 1), (3, 6)):
        xs = model.sample(n, steps, device=s.device)
        where = f"model.sample({n}, {steps})"
        parts = f"{s.describe('decoder')}, {s.describe('likelihood')}"
        _expect_shape(xs, (steps, n, model.x_dim), where, parts)
        if not xs.is_floating_point():
            raise Failure(f"{where}: expected a floating tensor, got {xs.dtype}; {parts}")
        u = torch.cat([torch.zeros_like(xs[:1]), xs[:-1]])
        with torch.no_grad():
            trace = model(u, xs, torch.ones(steps, n, device=s.device, dtype=xs.dtype))
            elbo = compute_terms(model, trace, s.comp, training=False).elbo
        if not torch.isfinite(elbo).all():
            raise Failure(f"the model's ELBO on its own samples is not finite ({elbo.tolist()}): "
                          f"they are not valid observations for {s.describe('likelihood')}")


def check_device(s: Subject) -> None:
    """On PyTorch's ``meta`` device (tensors with shapes but no data: a stand-in for an
    accelerator on a machine without one) the model runs a padded batch in training mode, its
    training loss backpropagates to every trainable parameter that the same batch reaches on
    the subject's own device, with gradients on the meta device, and it samples. A component
    that makes a tensor on a fixed device (``torch.zeros(n)`` without ``device=``) or reads a
    value back to Python (``.item()``, ``.tolist()``, a data-dependent branch) fails here; on
    CUDA it would fail or stall the GPU at every step."""
    reference = s.build().train()
    u, x, mask = make_batch(reference, 5, 3, s.device, [5, 3, 2])
    loss = compute_terms(reference, reference(u, x, mask), s.comp, update=0).loss
    params = dict(reference.named_parameters())
    reached = {name for name, g in zip(params, _grads(loss, params), strict=True) if g is not None}

    model = s.build().to("meta").train()
    u, x, mask = (t.to("meta") for t in (u, x, mask))
    for hub_min, path in ((fused.HUB_MIN_ELEMENTS, "probes"), (0, "weight hubs")):
        with hub_threshold(hub_min):  # the tiny layers through each deferred path in turn
            terms = compute_terms(model, model(u, x, mask), s.comp, update=0)
            meta_params = dict(model.named_parameters())
            grads = dict(zip(meta_params, _grads(terms.loss, meta_params), strict=True))
        missing = sorted(name for name in reached if grads[name] is None)
        if missing:
            raise Failure(f"on the meta device ({path}) these parameters get no gradient: "
                          f"{', '.join(missing)} (first: {s.describe(missing[0])})")  # fmt: skip
        wrong = sorted(name for name, g in grads.items() if g is not None and g.device.type != "meta")
        if wrong:
            raise Failure(f"gradients left the meta device for {', '.join(wrong)} ({s.describe(wrong[0])})")
    xs = model.eval().sample(2, 3, device="meta")
    if xs.device.type != "meta":
        raise Failure(f"model.sample(..., device='meta') returned a tensor on {xs.device}; "
                      f"{s.describe('decoder')}, {s.describe('likelihood')}")


def _grads(loss: Tensor, params: dict[str, Tensor]) -> tuple[Tensor | None, ...]:
    trainable = [p for p in params.values() if p.requires_grad]
    if not loss.requires_grad or not trainable:
        return (None,) * len(params)
    found = iter(torch.autograd.grad(loss, trainable, allow_unused=True))
    return tuple(next(found) if p.requires_grad else None for p in params.values())


CHECKS: tuple[Check, ...] = (
    Check("shapes", check_shapes),
    Check("padding", check_padding),
    Check("seed", check_seed),
    Check("gradients", check_gradients),
    Check("save-load", check_save_load),
    Check("sampling", check_sampling),
    Check("device", check_device),
    Check("fast-path", check_fast_path),
)
"""Every property, in the order :func:`~seqvae.testing.conformance.check_composition` runs them."""
