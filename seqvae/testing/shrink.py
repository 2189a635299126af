"""Shrinking a composition to tiny sizes without knowing its components.

The suite never names a component's options. Every ``int`` option whose name has a word that
suggests a size (``hidden``, ``embed``, ``mlp``, ``dim``, ``size``, ``width``, ...; see
:data:`SIZE_WORDS`) is capped, each at a *different* small value, so that a component that mixes
two of its sizes up fails instead of passing by coincidence. Values at or below the cap are
kept, which leaves ``0`` ("off") and ``1`` alone. ``model.latent_dim`` is capped as well.
Where the rule guesses wrong, ``overrides`` in ``--set`` syntax are applied last and win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, get_type_hints

from seqvae.composition import ENGINE_BLOCKS, MODEL_SLOTS, Composition, _apply_override, validate
from seqvae.registry import Registry, default_registry

SIZE_WORDS = (
    "hidden", "embed", "mlp", "dim", "size", "width", "unit", "channel", "feature", "component",
    "rnn",
)  # fmt: skip
"""An option is a size if one of its ``_``-separated words starts with one of these."""

TINY_LATENT = 4
FIRST_SIZE = 7
"""Sizes handed out start here: above the suite's default x_dim (3) and latent size (4)."""


def is_size_option(name: str) -> bool:
    """True for option names such as ``hidden``, ``emb_dim``, ``n_units``, ``cond_mlp``."""
    return any(word.startswith(size) for word in name.lower().split("_") for size in SIZE_WORDS)


def shrink(
    comp: Composition,
    registry: Registry | None = None,
    *,
    latent_dim: int = TINY_LATENT,
    uniform: int | None = None,
    overrides: Iterable[str] = (),
) -> Composition:
    """A copy of ``comp`` with every size-like int option capped at a small value.

    Sizes are handed out as 7, 8, 9, ... in slot order (likelihood, decoder, encoder, prior,
    then auxiliary objectives by name); ``uniform`` caps them all at one value instead.
    """
    registry = registry or default_registry()
    raw = comp.to_dict()
    model = raw["model"]
    if isinstance(model.get("latent_dim"), int) and model["latent_dim"] > latent_dim:
        model["latent_dim"] = latent_dim
    sizes = _sizes(uniform)
    for kind, spec in _slot_specs(model):
        _cap_sizes(spec, registry.get(kind, spec["component"]).cls.Options, sizes)
        for key, options_cls in ENGINE_BLOCKS.get(kind, {}).items():  # the engine's own options
            if isinstance(spec.get(key), dict):
                _cap_sizes(spec[key], options_cls, sizes)
    for item in overrides:
        _apply_override(raw, item)
    return validate(raw, registry, source=comp.source, name=comp.name)


def _cap_sizes(spec: dict[str, Any], options_cls: type, sizes: Iterator[int]) -> None:
    hints = get_type_hints(options_cls)
    for option in dataclasses.fields(options_cls):
        if hints.get(option.name) is not int or not is_size_option(option.name):
            continue
        cap = next(sizes)
        value = spec.get(option.name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            spec[option.name] = cap


def required_options(cls: type, fill: int = FIRST_SIZE) -> dict[str, Any]:
    """Values for a component's options that have no default: small ints, False for bools.

    Options of other types are left out, so validation names them ("required option missing")
    and the caller can pass them as overrides.
    """
    options_cls = getattr(cls, "Options", None)
    if not dataclasses.is_dataclass(options_cls):
        return {}
    hints = get_type_hints(options_cls)
    out: dict[str, Any] = {}
    for option in dataclasses.fields(options_cls):
        missing = dataclasses.MISSING
        if option.default is not missing or option.default_factory is not missing:
            continue
        if hints.get(option.name) is int:
            out[option.name] = fill
        elif hints.get(option.name) is bool:
            out[option.name] = False
    return out


def _sizes(uniform: int | None) -> Iterator[int]:
    size = FIRST_SIZE
    while True:
        yield uniform if uniform is not None else size
        size += 1


def _slot_specs(model: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for slot in MODEL_SLOTS:
        if isinstance(model.get(slot), dict):
            yield slot, model[slot]
    for key in sorted(model.get("aux") or {}):
        yield "aux", model["aux"][key]
