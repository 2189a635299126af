"""What the slots share, declared: the fields of cond_t and of the decoder's context, what the
encoder's summary has read, and what each component reads of them.

A decoder declares the named fields of cond_t and of its context, in order, with their sizes
(:meth:`seqvae.slots.Decoder.cond_fields`, :meth:`~seqvae.slots.Decoder.context_fields`), from
the vocabulary :data:`FIELDS`. An encoder declares which observations its summary at step t
has read, relative to t (:meth:`seqvae.slots.Encoder.summary_reads`): :data:`PAST` (x_{<t}),
:data:`CURRENT` (x_t), :data:`FUTURE` (x_{>t}). Every component declares what it needs of
those (:meth:`seqvae.slots.Component.reads`, a :class:`Reads`). The builder
(:func:`seqvae.composition.build_model`) checks each component against the decoder and encoder
before building it and refuses a composition whose parts do not fit, naming both.

Declarations are class methods of (options, ctx), so that the builder can also ask the other
registered components, with their default options, whether they would fit, and say so.
Undeclared means unchecked: a decoder whose ``cond_fields`` returns None, or an encoder whose
``summary_reads`` returns None (the defaults), is taken on trust, as before declarations existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PAST, CURRENT, FUTURE = "past", "current", "future"
"""What a per-step quantity at step t has read of the observations: x_{<t}, x_t, x_{>t}."""
EXTENT_TEXT = {PAST: "x_{<t}", CURRENT: "x_t", FUTURE: "x_{>t}"}
ANY = "any"
"""In :class:`Reads`: any non-empty cond_t or context (read whole), or a summary of any extent."""


@dataclass(frozen=True)
class Field:
    """One named field of cond_t or of the decoder's context."""

    symbol: str
    meaning: str
    reads: frozenset[str]
    """What the field at step t has read of the observations."""


FIELDS: dict[str, Field] = {
    "h_prev": Field("h_{t-1}", "the decoder's recurrent state before step t (it has read x_{<t} and z_{<t})",
                    frozenset({PAST})),
    "z_prev": Field("z_{t-1}", "the previous latent (at step 1: zeros or a learned z_0)", frozenset({PAST})),
    "d_t": Field("d_t", "a deterministic forward state over the inputs u_1..u_t = x_{<t}", frozenset({PAST})),
    "z_above": Field("z_t^{l+1}", "the latent layer above, at the same step (hierarchical decoders)",
                     frozenset({PAST})),
    "d_next": Field("d_t^+", "a deterministic forward state one step further, over u_1..u_{t+1} = x_{<=t} "
                    "(context only)", frozenset({PAST, CURRENT})),
    "x_t": Field("phi(x_t)", "features of the current observation (context only)", frozenset({CURRENT})),
    "f": Field("f", "the sequence-level latent of the static slot, drawn from q(f | x_{1:T}) (context only)",
               frozenset({PAST, CURRENT, FUTURE})),
}  # fmt: skip
"""The vocabulary of fields. cond_t holds none that reads x_t: the prior reads cond_t."""


@dataclass(frozen=True)
class Reads:
    """What a component needs of the decoder's cond_t and context and of the encoder's summary.

    The default, ``Reads()``, needs nothing: a component that declares nothing is never refused.
    """

    cond: tuple[str, ...] = ()
    """Fields cond_t must hold (it reads them by name), or ``(ANY,)``: it reads cond_t whole,
    which must not be empty."""
    context: tuple[str, ...] = ()
    """The same for the decoder's context."""
    summary: tuple[str, ...] = ()
    """What the encoder's summary at step t must have read (:data:`FUTURE`, ...), or ``(ANY,)``:
    any summary; () needs none."""
    summary_unread: tuple[str, ...] = ()
    """What the encoder's summary at step t must not have read."""
    why: str = ""
    """Why, quoted in the refusal (e.g. what it predicts from the summary)."""
    layered: bool = False
    """It implements the per-layer methods (``Prior.layer``, ``Encoder.posterior_layer``) that a
    decoder with parallel latents needs; a prior or encoder without them is refused under such
    a decoder, and one with them under a decoder with a step loop."""


@dataclass(frozen=True)
class Shared:
    """What a composition's decoder and encoder give the other slots; None: undeclared."""

    cond: Mapping[str, int] | None = None
    cond_dim: int = 0
    context: Mapping[str, int] | None = None
    context_dim: int = 0
    summary: frozenset[str] | None = None
    summary_dim: int = 0
    layered: bool = False
    """The decoder draws its latents in layers without a step loop (``parallel_latents``)."""


def field_reads(fields: Mapping[str, int] | None) -> frozenset[str] | None:
    """What a concatenation of fields has read; None if the fields are undeclared."""
    if fields is None:
        return None
    return frozenset().union(*(FIELDS[name].reads for name in fields if name in FIELDS))


_SCANS = {
    # an input at step s that has read x_{<s}, x_s or x_{>s}, seen from step t >= s ...
    "forward": {PAST: {PAST}, CURRENT: {PAST, CURRENT}, FUTURE: {PAST, CURRENT, FUTURE}},
    # ... and from step t <= s
    "backward": {PAST: {PAST, CURRENT, FUTURE}, CURRENT: {CURRENT, FUTURE}, FUTURE: {FUTURE}},
}


def forward_scan(inputs: Iterable[str]) -> frozenset[str]:
    """What a causal RNN's state at t has read, over inputs at steps s <= t that each read
    ``inputs`` relative to s."""
    return frozenset().union(*(_SCANS["forward"][e] for e in inputs))


def backward_scan(inputs: Iterable[str]) -> frozenset[str]:
    """What a backward RNN's state at t has read, over inputs at steps s >= t."""
    return frozenset().union(*(_SCANS["backward"][e] for e in inputs))


def field_slice(fields: Mapping[str, int] | None, name: str, legacy_size: int) -> slice:
    """Where field ``name`` lies in cond_t. An undeclared cond_t keeps the old convention:
    the field is its first ``legacy_size`` entries (deprecated; decoders declare their fields)."""
    if fields is None:
        return slice(0, legacy_size)
    start = 0
    for key, size in fields.items():
        if key == name:
            return slice(start, start + size)
        start += size
    raise KeyError(f"cond_t declares no field {name!r} (fields: {', '.join(fields) or 'none'})")


def show_fields(fields: Mapping[str, int] | None) -> str:
    if fields is None:
        return "undeclared fields"
    return "[" + ", ".join(f"{name} ({size})" for name, size in fields.items()) + "]"


def _show_name(name: str) -> str:
    field = FIELDS.get(name)
    return f"{name} ({field.symbol})" if field is not None and field.symbol != name else name


def _show_extents(extents: Iterable[str]) -> str:
    return ", ".join(EXTENT_TEXT[e] for e in (PAST, CURRENT, FUTURE) if e in extents) or "nothing"


def unmet(reads: Reads, shared: Shared, layered_slot: bool = False) -> list[tuple[str, str]]:
    """What ``reads`` needs and ``shared`` lacks: (the slot that lacks it, what), empty if it
    fits. Undeclared fields and summaries pass every check their sizes cannot refute.
    ``layered_slot``: the component is a prior or an encoder, which must match the decoder's
    way of drawing latents (:attr:`Reads.layered`)."""
    out = []
    if layered_slot and shared.layered and not reads.layered:
        out.append(("decoder", "reads one cond_t per step (it has no per-layer form), and the decoder "
                               "draws its latents in layers, for all steps at once (no step loop)"))  # fmt: skip
    elif layered_slot and reads.layered and not shared.layered:
        out.append(("decoder", "works one latent layer at a time over all steps, and the decoder draws "
                               "one z_t per step in a step loop"))  # fmt: skip
    for what, needed, fields, dim in (("cond_t", reads.cond, shared.cond, shared.cond_dim),
                                      ("context", reads.context, shared.context, shared.context_dim)):  # fmt: skip
        if ANY in needed and dim < 1:
            out.append(("decoder", f"reads {what} whole, which is empty"))
        named = [name for name in needed if name != ANY]
        if fields is not None and any(name not in fields for name in named):
            wanted = ", ".join(map(_show_name, named))
            out.append(("decoder", f"reads {wanted} from {what}, which holds {show_fields(fields)}"))
    if reads.summary or reads.summary_unread:
        if shared.summary_dim < 1 and (shared.summary is None or not shared.summary):
            out.append(("encoder", "reads the encoder's per-step summary, and there is none"))
        elif shared.summary is not None:
            lacking = [e for e in reads.summary if e != ANY and e not in shared.summary]
            extra = [e for e in reads.summary_unread if e in shared.summary]
            if lacking or extra:
                need = [f"has read {_show_extents(lacking)}"] if lacking else []
                need += [f"has not read {_show_extents(extra)}"] if extra else []
                out.append(("encoder", f"needs a summary at step t that {' and '.join(need)}, and the "
                                       f"encoder's has read {_show_extents(shared.summary)}"))  # fmt: skip
    return out


def declaration_problem(cond: Mapping[str, int] | None, context: Mapping[str, int] | None,
                        cond_dim: int, context_dim: int) -> str | None:  # fmt: skip
    """What is wrong with a decoder's declared fields, or None."""
    for what, fields, dim in (("cond_fields", cond, cond_dim), ("context_fields", context, context_dim)):
        if fields is None:
            continue
        unknown = [name for name in fields if name not in FIELDS]
        if unknown:
            return f"{what} names {unknown[0]!r}, not a known field ({', '.join(FIELDS)})"
        if sum(fields.values()) != dim:
            size = "cond_dim" if what == "cond_fields" else "context_dim"
            return f"{what} {show_fields(fields)} add up to {sum(fields.values())}, but {size} is {dim}"
    if cond is not None:
        seen = [name for name in cond if FIELDS[name].reads & {CURRENT, FUTURE}]
        if seen:
            return f"cond_fields holds {seen[0]!r}, which has read x_t; the prior reads cond_t, so it must not"
    return None
