"""What the suite tests: a composition, or one registered component placed in a composition.

A :class:`Case` is cheap and unbuilt (it is what pytest parametrises over); resolving it gives a
:class:`Subject`: a tiny, validated composition known to build, with the ``x_dim`` it builds for
and a label that names what is under test, used in every failure message.

A component is tested inside a base composition: first one that already uses it, otherwise
each base in turn with the component swapped into its slot (a decoder without latents also
drops the encoder and prior; an auxiliary objective is added next to the others; if the base's
auxiliary objectives do not fit the swapped component they are dropped). The first variant that
validates and builds wins; a component that fits no base is *skipped*, with every base's reason.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.composition import (
    Composition,
    _apply_override,
    _merge,
    build_model,
    load_composition,
    validate,
)
from seqvae.errors import ConfigError, UserError
from seqvae.model import SequenceModel
from seqvae.registry import Registry
from seqvae.testing.shrink import required_options, shrink

UNDER_TEST = "under_test"
"""The ``model.aux`` key an auxiliary objective under test is added as."""


class ConformanceSkip(Exception):
    """The subject cannot be tested (a component that fits no base composition); says why."""


class ConformanceError(AssertionError):
    """The subject failed one or more properties; ``failures`` maps each to what went wrong."""

    def __init__(self, label: str, failures: dict[str, str]) -> None:
        self.label = label
        self.failures = dict(failures)
        lines = "\n".join(f"  [{prop}] {detail}" for prop, detail in self.failures.items())
        super().__init__(f"{label} fails conformance ({', '.join(self.failures)}):\n{lines}")


@dataclass
class Subject:
    """A resolved case: the tiny composition to test and how to describe its parts."""

    label: str
    comp: Composition
    x_dim: int
    registry: Registry
    device: str = "cpu"

    def build(self, seed: int = 0) -> SequenceModel:
        """A fresh model, initialised from ``seed`` (the global RNG is reseeded)."""
        torch.manual_seed(seed)
        return build_model(self.comp, self.x_dim, self.registry).to(self.device)

    def describe(self, where: str) -> str:
        """Name the component at ``where``: a slot, ``aux.KEY``, or a parameter name."""
        parts = where.split(".")
        if parts[0] == "flow" and "encoder" in self.comp.slots:  # the engine's flow on the encoder
            encoder = self.comp.slots["encoder"].component
            return f"the flow on encoder {encoder!r} (model.encoder.flow, seqvae.flow)"
        if parts[0] == "aux" and len(parts) > 1:
            spec, kind, place = self.comp.aux.get(parts[1]), "aux", f"model.aux.{parts[1]}"
        else:
            spec, kind, place = self.comp.slots.get(parts[0]), parts[0], f"model.{parts[0]}"
        if spec is None:
            return where
        return f"{kind} {spec.component!r} ({place}, {self.provider(kind, spec.component)})"

    def provider(self, kind: str, name: str) -> str:
        try:
            return f"plugin {self.registry.get(kind, name).provider!r}"
        except UserError:
            return "unregistered"


class Bases:
    """Base compositions for component cases: (name, composition) pairs, loaded once on first
    use and shared by every case made from the same list."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = list(items)
        self._loaded: dict[int, list[Composition | UserError]] = {}

    def load(self, registry: Registry) -> list[Composition | UserError]:
        """The compositions, or for one that does not load, its error."""
        if id(registry) not in self._loaded:
            self._loaded[id(registry)] = [self._load(s, registry, name) for name, s in self.items]
        return self._loaded[id(registry)]

    @staticmethod
    def _load(source: Any, registry: Registry, name: str) -> Composition | UserError:
        try:
            return as_composition(source, registry, name)
        except UserError as error:
            return error


@dataclass
class Case:
    """One subject of the suite before it is built; ``str(case)`` is its pytest id."""

    kind: str
    """``composition``, or the slot of a registered component."""
    name: str
    registry: Registry
    source: Any = None
    """For a composition: a built-in name, a YAML path, a mapping or a Composition."""
    bases: Bases | None = None
    """For a component: the compositions it may be placed in, in order of preference."""
    x_dim: int = 3
    overrides: tuple[str, ...] = ()
    device: str = "cpu"
    _subject: Subject | None = field(default=None, init=False, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def resolve(self) -> Subject:
        """The built subject (cached); ConformanceError if a composition does not build,
        ConformanceSkip if a component fits no base composition."""
        if self._subject is None:
            if self.kind == "composition":
                self._subject = _resolve_composition(self)
            else:
                self._subject = _resolve_component(self)
        return self._subject


def as_composition(obj: Any, registry: Registry, name: str | None = None) -> Composition:
    """A Composition from a built-in name, a YAML path, a raw mapping (``base:`` allowed)."""
    if isinstance(obj, Composition):
        return obj
    if isinstance(obj, (str, Path)):
        return load_composition(str(obj), registry=registry)
    if isinstance(obj, dict):
        raw = {k: v for k, v in obj.items() if k != "base"}
        if obj.get("base") is not None:
            raw = _merge(as_composition(obj["base"], registry).to_dict(), raw)
        source = f"<{name or 'mapping'}>"
        return validate(copy.deepcopy(raw), registry, source=source, name=name or "custom")
    kind = type(obj).__name__
    raise TypeError(f"expected a composition name, path, mapping or Composition, got {kind}")


def composition_name(obj: Any) -> str:
    if isinstance(obj, Composition):
        return obj.name
    if isinstance(obj, Path) or (isinstance(obj, str) and obj.endswith((".yaml", ".yml"))):
        return Path(obj).stem
    return str(obj) if isinstance(obj, str) else "custom"


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Run single-threaded with the global RNG seeded; restore the caller's RNG state and
    thread count afterwards.

    The models are tiny, so intra-op threads only add synchronisation; on a busy machine their
    spin-waiting made the suite 10-20 times slower.
    """
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def tiny(comp: Composition, case: Case, x_dims: tuple[int, ...]) -> tuple[Composition, int]:
    """Shrink ``comp`` and find an x_dim it builds for: distinct sizes first, then uniform ones
    (for components that tie two sizes together). ConfigError (the last one) if nothing builds."""
    error: ConfigError | None = None
    for uniform in (None, 8):
        small = shrink(comp, case.registry, uniform=uniform, overrides=case.overrides)
        for x_dim in dict.fromkeys(x_dims):
            try:
                with seeded(0):
                    build_model(small, x_dim, case.registry)
            except ConfigError as failed:
                error = failed
                continue
            return small, x_dim
    assert error is not None
    raise error


def _resolve_composition(case: Case) -> Subject:
    label = f"composition {case.name!r}"
    try:
        comp = as_composition(case.source, case.registry, case.name)
        small, x_dim = tiny(comp, case, (case.x_dim, 1))
    except UserError as error:
        raise ConformanceError(label, {"build": str(error)}) from error
    return Subject(label, small, x_dim, case.registry, case.device)


def _resolve_component(case: Case) -> Subject:
    entry = case.registry.get(case.kind, case.name)
    label = f"{case.kind} {case.name!r} (plugin {entry.provider!r})"
    loaded = case.bases.load(case.registry) if case.bases is not None else []
    names = [name for name, _ in case.bases.items] if case.bases is not None else []
    reasons = [f"composition {name!r}: {b}" for name, b in zip(names, loaded, strict=True)
               if isinstance(b, UserError)]  # fmt: skip
    bases = [b for b in loaded if isinstance(b, Composition)]
    using = [b for b in bases if _uses(b, case.kind, case.name)]
    candidates = [(b.to_dict(), f"in composition {b.name!r}", b.name) for b in using]
    for base in (b for b in bases if not any(b is u for u in using)):
        for raw, how in _swaps(base.to_dict(), case.kind, entry.name, entry.cls):
            candidates.append((raw, f"{how} of composition {base.name!r}", base.name))
    for raw, where, name in candidates:
        for item in case.overrides:
            with contextlib.suppress(UserError):
                _apply_override(raw, item)
        try:
            comp = validate(raw, case.registry, source=f"<{where}>", name=name)
            small, x_dim = tiny(comp, case, (case.x_dim, 1))
        except UserError as error:
            reasons.append(f"{where}: {error}")
            continue
        return Subject(f"{label}, tested {where}", small, x_dim, case.registry, case.device)
    tried = "\n  ".join(reasons) or "no base compositions were given"
    raise ConformanceSkip(f"{label} fits no base composition; tried:\n  {tried}")


def _uses(comp: Composition, kind: str, name: str) -> bool:
    if kind == "aux":
        return any(spec.component == name for spec in comp.aux.values())
    spec = comp.slots.get(kind)
    return spec is not None and spec.component == name


def _swaps(raw: dict, kind: str, name: str, cls: type) -> list[tuple[dict, str]]:
    """Variants of a base composition holding component ``name`` in slot ``kind``."""
    raw = copy.deepcopy(raw)
    model = raw["model"]
    spec = {"component": name, **required_options(cls)}
    if kind == "aux":
        model.setdefault("aux", {})[UNDER_TEST] = spec
        return [(raw, f"added as model.aux.{UNDER_TEST}")]
    model[kind] = spec
    if kind == "decoder" and not getattr(cls, "uses_latent", True):
        model.pop("encoder", None)
        model.pop("prior", None)
        model["latent_dim"] = 0
    variants = [(raw, f"as model.{kind}")]
    if model.get("aux"):
        bare = copy.deepcopy(raw)
        bare["model"]["aux"] = {}
        variants.append((bare, f"as model.{kind} (auxiliary objectives dropped)"))
    return variants
