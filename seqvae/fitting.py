"""Refusing, at build time, a composition whose parts do not fit (:mod:`seqvae.contract`).

:func:`check_decoder` checks what a decoder declares; :func:`check_fit` checks a component's
:class:`~seqvae.contract.Reads` against what the decoder and encoder share, before the
component is built. A refusal is one :class:`~seqvae.errors.ConfigError` at
``model.SLOT.component`` that names both components and the complete fix: the component's own
options that would make it fit, the registered components of its slot that fit its partner,
and those of the partner's slot that would fit it (each with its default options).
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any

from seqvae.contract import Reads, Shared, declaration_problem, unmet
from seqvae.errors import ConfigError, UserError
from seqvae.options import parse
from seqvae.slots import BuildContext

if typing.TYPE_CHECKING:
    from seqvae.composition import Composition, SlotSpec
    from seqvae.registry import Registry
    from seqvae.slots import Decoder


LAYERED_SLOTS = ("encoder", "prior")
"""The slots whose components must match the decoder's way of drawing latents (one z_t per step,
or layers without a step loop; :attr:`seqvae.contract.Reads.layered`)."""


def shared_of(ctx: BuildContext) -> Shared:
    """What the decoder and encoder built so far share, as the context records it."""
    return Shared(ctx.cond_fields, ctx.cond_dim, ctx.context_fields, ctx.context_dim,
                  ctx.summary_reads, ctx.summary_dim, layered=bool(ctx.latent_layers))  # fmt: skip


def check_decoder(decoder: Decoder, spec: SlotSpec, ctx: BuildContext, source: str) -> None:
    """Record the built decoder's declared fields in ``ctx``; refuse a declaration that
    contradicts the decoder (unknown names, sizes that do not add up, x_t in cond_t)."""
    ctx.cond_fields = _declared(type(decoder).cond_fields, spec.options, ctx)
    ctx.context_fields = _declared(type(decoder).context_fields, spec.options, ctx)
    if ctx.cond_fields is None or ctx.context_fields is None:
        _undeclared(f"decoder {spec.component!r} declares no fields of cond_t or its context")
    problem = declaration_problem(ctx.cond_fields, ctx.context_fields, decoder.cond_dim, decoder.context_dim)
    if decoder.parallel_latents:
        ctx.latent_layers = tuple(decoder.latent_layers)
        sizes = [layer.z_dim for layer in ctx.latent_layers]
        if sum(sizes) != ctx.z_dim or min(sizes, default=0) < 1:
            problem = problem or (f"latent layers of sizes {sizes}, which must be positive and add up to "
                                  f"latent_dim {ctx.z_dim}")
    if problem:
        fix = "fix the decoder's declaration (docs/writing-plugins.md, 'The slot contracts')"
        raise ConfigError(f"{spec.path}.component", f"decoder {spec.component!r} declares {problem}; {fix}", source)


def record_encoder(encoder: Any, spec: SlotSpec, ctx: BuildContext, source: str) -> None:
    """Record the built encoder's summary and what it has read in ``ctx``."""
    ctx.summary_dim = encoder.summary_dim
    reads = type(encoder).summary_reads(spec.options, ctx)
    ctx.summary_reads = None if reads is None else frozenset(reads)
    if reads is None:
        _undeclared(f"encoder {spec.component!r} does not declare what its summary has read (summary_reads)")
    if ctx.summary_reads is not None and bool(ctx.summary_reads) != (encoder.summary_dim > 0):
        raise ConfigError(f"{spec.path}.component", f"encoder {spec.component!r} declares a summary that has "
                          f"read {sorted(ctx.summary_reads) or 'nothing'} but has summary_dim {encoder.summary_dim}; "
                          "fix the encoder's summary_reads", source)  # fmt: skip


def check_fit(kind: str, spec: SlotSpec, comp: Composition, ctx: BuildContext, registry: Registry) -> None:
    """Refuse component ``spec`` of slot ``kind`` if its declared reads do not fit the decoder
    and encoder (``ctx``); the message names both and what would fit."""
    cls = registry.get(kind, spec.component).cls
    shared = shared_of(ctx)
    layered = kind in LAYERED_SLOTS
    problems = unmet(cls.reads(spec.options, ctx), shared, layered)
    if not problems:
        return
    partners = list(dict.fromkeys(slot for slot, _ in problems))
    what = f"{_kind_name(kind)} {spec.component!r}"
    parts = "; ".join(f"it {text}" for _, text in problems)
    why = cls.reads(spec.options, ctx).why
    fixes = _option_fixes(cls, spec, ctx, shared, layered)
    others = [e.name for e in registry.entries(kind) if e.name != spec.component
              and _fits(e.cls, _defaults(e.cls), ctx, shared, layered)]  # fmt: skip
    if others:
        fixes.append(f"{spec.path}.component: {_one_of(others)} (fitting "
                     f"{' and '.join(_partner(slot, comp) for slot in partners)})")
    for slot in partners:
        if slot in comp.slots:
            fitting = _partner_alternatives(slot, kind, cls, spec, ctx, shared, comp, registry)
            if fitting:
                fixes.append(f"model.{slot}.component: {_one_of(fitting)} (which {what} fits)")
        elif kind == "aux":  # the model has no such part: the objective cannot work here
            fixes.append(f"remove the objective (--set {spec.path}=null)")
    fix = "; or ".join(fixes) or "choose parts whose declarations fit (docs/writing-plugins.md, 'The slot contracts')"
    message = (f"{what} does not fit {' and '.join(_partner(slot, comp) for slot in partners)}: {parts}"
               f"{f' ({why})' if why else ''}. Fix: {fix}")  # fmt: skip
    raise ConfigError(f"{spec.path}.component", message, comp.source)


def check_cond_is_read(comp: Composition, ctx: BuildContext, registry: Registry) -> None:
    """Refuse a prior that reads nothing of cond_t under a decoder whose recurrence exists only
    for the prior (:attr:`seqvae.slots.Decoder.cond_for_prior`), when the encoder reads none of
    it either: the recurrence would get no gradient."""
    decoder = registry.get("decoder", comp.slots["decoder"].component).cls
    if not decoder.cond_for_prior or "prior" not in comp.slots:
        return
    readers = [slot for slot in ("prior", "encoder")
               if registry.get(slot, comp.slots[slot].component).cls.reads(comp.slots[slot].options, ctx).cond]
    if readers:
        return
    spec = comp.slots["prior"]
    others = [e.name for e in registry.entries("prior")
              if (defaults := _defaults(e.cls)) is not None and e.cls.reads(defaults, ctx).cond]  # fmt: skip
    fix = f"{spec.path}.component: {_one_of(others)}" if others else "a prior that reads cond_t"
    raise ConfigError(f"{spec.path}.component", f"prior {spec.component!r} does not fit {_partner('decoder', comp)}: "
                      "it reads nothing of cond_t, whose recurrence exists only for the prior, so that recurrence "
                      f"would never be trained. Fix: {fix}", comp.source)  # fmt: skip


def _undeclared(what: str) -> None:
    warnings.warn(f"{what}: taken on trust, which is deprecated; declare it (docs/writing-plugins.md, "
                  "'The slot contracts')", DeprecationWarning, stacklevel=3)  # fmt: skip


def _kind_name(kind: str) -> str:
    return "auxiliary objective" if kind == "aux" else kind


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"one of {', '.join(names)}"


def _partner(slot: str, comp: Composition) -> str:
    spec = comp.slots.get(slot)
    if spec is None:
        decoder = comp.slots["decoder"].component
        return f"the model, which has no {slot} (decoder {decoder!r} draws no latents)"
    return f"{slot} {spec.component!r} ({spec.path}.component)"


def _declared(method: Any, options: Any, ctx: BuildContext) -> dict[str, int] | None:
    fields = method(options, ctx)
    return None if fields is None else dict(fields)


def _defaults(cls: type) -> Any:
    """``cls``'s default options, or None if it has required options."""
    try:
        return parse(cls.Options, {}, "")
    except UserError:
        return None


def _fits(cls: type, options: Any, ctx: BuildContext, shared: Shared, layered: bool) -> bool:
    if options is None:
        return False
    try:
        return not unmet(cls.reads(options, ctx), shared, layered)
    except Exception:  # noqa: BLE001 -- another plugin's declaration failing only drops it from the hint
        return False


def _option_fixes(cls: type, spec: SlotSpec, ctx: BuildContext, shared: Shared, layered: bool) -> list[str]:
    """``set PATH.OPTION=VALUE`` for each switch of the component's own options that makes it fit."""
    fixes = []
    hints = typing.get_type_hints(type(spec.options))
    for option in dataclasses.fields(spec.options):
        hint = hints.get(option.name)
        values = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else (
            (True, False) if hint is bool else ())  # fmt: skip
        for value in values:
            if value == getattr(spec.options, option.name):
                continue
            try:
                changed = dataclasses.replace(spec.options, **{option.name: value})
            except Exception:  # noqa: BLE001 -- a combination the options refuse is no fix
                continue
            if _fits(cls, changed, ctx, shared, layered):
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                fixes.append(f"set {spec.path}.{option.name}={shown}")
    return fixes


def _partner_alternatives(
    slot: str, kind: str, cls: type, spec: SlotSpec, ctx: BuildContext, shared: Shared,
    comp: Composition, registry: Registry,
) -> list[str]:
    """Registered components of the partner's slot (default options, declared) that ``spec`` would fit."""
    out = []
    for entry in registry.entries(slot):
        if entry.name == comp.slots[slot].component:
            continue
        options = _defaults(entry.cls)
        if options is None:
            continue
        try:
            if slot == "decoder":
                if not getattr(entry.cls, "uses_latent", True) and kind != "aux":
                    continue
                cond, context = entry.cls.cond_fields(options, ctx), entry.cls.context_fields(options, ctx)
                if cond is None or context is None:
                    continue
                alt = dataclasses.replace(shared, cond=cond, cond_dim=sum(cond.values()), context=context,
                                          context_dim=sum(context.values()),
                                          layered=getattr(entry.cls, "parallel_latents", False))  # fmt: skip
            else:
                reads = entry.cls.summary_reads(options, ctx)
                if reads is None or unmet(entry.cls.reads(options, ctx), shared, True):
                    continue  # undeclared, or it would not fit the decoder itself
                alt = dataclasses.replace(shared, summary=frozenset(reads), summary_dim=int(bool(reads)))
        except Exception:  # noqa: BLE001 -- another plugin's declaration failing only drops it from the hint
            continue
        if not unmet(cls.reads(spec.options, ctx), alt, kind in LAYERED_SLOTS):
            out.append(entry.name)
    return out


__all__ = ["Reads", "check_decoder", "check_fit", "record_encoder", "shared_of"]
