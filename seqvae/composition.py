"""Compositions: which component fills each slot, with which options, and how to train it.

A composition is a YAML mapping (built-in ones live in ``registry.yaml``)::

    description: ...
    base: NAME                # optional: start from another composition, then deep-merge
    model:
      latent_dim: 256
      likelihood: {component: gaussian}
      decoder:    {component: latent-lstm, embed: 512, hidden: 1024}
      encoder:    {component: backward-lstm, embed: 512, hidden: 1024, mlp: 512,
                   flow: {steps: 2, hidden: 256}}   # optional: IAF steps on q (seqvae.flow)
      prior:      {component: gaussian-mlp, hidden: 512}
      aux:                    # zero or more, by a name of your choice; `weight` is a schedule
        reconstruction: {component: summary-reconstruction, hidden: 512, weight: 0.5}
    objective: {kl_weight: {start: 0.2, end: 1.0, step: 5.0e-5}, free_bits: 0.0}
    train: {lr: 1.0e-3, batch_size: 32}

In a ``base:`` merge and in ``--set`` overrides, ``null`` deletes a key (``--set
model.aux.reconstruction=null`` drops that objective).

Two option blocks belong to the engine, not to a component, and survive a change of component
(:data:`ENGINE_BLOCKS`): an auxiliary objective's ``weight`` and the encoder's ``flow``.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from seqvae import fitting
from seqvae.errors import ConfigError, UserError
from seqvae.flow import FlowOptions, build_flow
from seqvae.model import SequenceModel
from seqvae.options import parse, show_key, show_value, to_plain
from seqvae.registry import Registry, default_registry
from seqvae.schedules import Schedule
from seqvae.settings import ObjectiveConfig, TrainConfig
from seqvae.slots import BuildContext
from seqvae.yamlio import load_yaml, loads

MODEL_SLOTS = ("likelihood", "static", "decoder", "encoder", "prior")
TOP_KEYS = ("description", "base", "model", "objective", "train")
ENGINE_BLOCKS: dict[str, dict[str, type]] = {"encoder": {"flow": FlowOptions}}
"""Option blocks of a slot that the engine reads itself, whatever the component (the aux
``weight`` schedule is the other one): ``model.encoder.flow`` wraps any encoder's Gaussian."""
FREE_BITS_WITH_FLOW = (
    "free bits clamp the KL of each latent dimension, which a flow "
    "posterior (model.encoder.flow.steps > 0) has no closed form of; set objective.free_bits=0 "
    "or model.encoder.flow.steps=0"
)


@dataclass
class SlotSpec:
    component: str
    options: Any
    path: str
    weight: Schedule | None = None
    """Auxiliary objectives only: the weight schedule (key ``weight``, default 1)."""
    flow: FlowOptions | None = None
    """The encoder only: the flow on its posterior (key ``flow``; steps 0 by default)."""


@dataclass
class Composition:
    """A validated composition: components resolved, options typed, defaults filled in."""

    name: str
    source: str
    description: str
    latent_dim: int
    slots: dict[str, SlotSpec]
    aux: dict[str, SlotSpec]
    objective: ObjectiveConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        """The resolved composition; valid input to :func:`load_composition` again."""

        def spec(s: SlotSpec) -> dict[str, Any]:
            weight = {} if s.weight is None else {"weight": to_plain(s.weight)}
            # written only when set: a composition without a flow reads as it always did
            flow = {} if s.flow in (None, FlowOptions()) else {"flow": to_plain(s.flow)}
            return {"component": s.component, **to_plain(s.options), **weight, **flow}

        model: dict[str, Any] = {"latent_dim": self.latent_dim}
        model.update({slot: spec(s) for slot, s in self.slots.items()})
        model["aux"] = {name: spec(s) for name, s in self.aux.items()}
        return {
            "description": self.description,
            "model": model,
            "objective": to_plain(self.objective),
            "train": to_plain(self.train),
        }


# --------------------------------------------------------------------------- loading


def registry_file() -> Path:
    """The built-in registry.yaml (inside the installed package)."""
    return Path(str(importlib.resources.files("seqvae").joinpath("registry.yaml")))


@lru_cache(maxsize=4)
def _registry_data(path: Path, mtime: float) -> dict[str, Any]:
    return load_yaml(path) or {}


def registry_section(key: str) -> dict[str, Any]:
    """A top-level section of the built-in registry.yaml (a copy)."""
    path = registry_file()
    data = _registry_data(path, path.stat().st_mtime)  # parsed once per process and version
    section = copy.deepcopy(data.get(key) or {})
    if not isinstance(section, dict):
        raise UserError(f"{registry_file()}: {key}: expected a mapping")
    return section


def builtin_compositions() -> dict[str, dict[str, Any]]:
    return registry_section("compositions")


def builtin_presets() -> dict[str, dict[str, Any]]:
    """Per data set: ``all`` (overrides for every model) and ``models`` (per composition)."""
    return registry_section("presets")


def published_numbers() -> dict[str, dict[str, float]]:
    """Published results per data set and composition, in the data set's unit."""
    return registry_section("published")


def load_composition(
    name_or_path: str,
    overrides: list[str] | None = None,
    registry: Registry | None = None,
) -> Composition:
    """Resolve a built-in name or a YAML file, apply ``--set`` overrides and validate."""
    raw, source, name = raw_composition(name_or_path, overrides)
    return validate(raw, registry or default_registry(), source=source, name=name)


def raw_composition(name_or_path: str, overrides: list[str] | None = None) -> tuple[dict, str, str]:
    """The unvalidated mapping of a built-in name or YAML file (``base:`` merged) with
    ``--set`` overrides applied, its source (for messages) and its name."""
    raw, source, name = _resolve(name_or_path)
    raw = copy.deepcopy(raw)
    apply_overrides(raw, overrides or [])
    return raw, source, name


def apply_overrides(raw: dict, overrides: list[str]) -> None:
    """``--set KEY=VALUE`` items applied in order to a raw composition (in place)."""
    for item in overrides:
        _apply_override(raw, item)


def _resolve(name_or_path: str, seen: tuple[str, ...] = ()) -> tuple[dict, str, str]:
    builtins = builtin_compositions()
    path = Path(name_or_path)
    if name_or_path in builtins:
        raw, source, name = builtins[name_or_path], f"{registry_file()} ({name_or_path})", name_or_path
    elif path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"{path}: composition file not found")
        raw, source, name = load_yaml(path), str(path), path.stem
    else:
        close = difflib.get_close_matches(name_or_path, list(builtins), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UserError(
            f"unknown model {name_or_path!r}{hint} (built-in: {', '.join(builtins)}; "
            "or pass a composition .yaml file)"
        )
    if not isinstance(raw, dict):
        raise ConfigError("", "expected a mapping with keys model, objective, train", source)
    base = raw.get("base")
    if base is None:
        return raw, source, name
    if not isinstance(base, str):
        raise ConfigError("base", f"expected the name or file of a composition, got {show_value(base)}", source)
    if base in seen:
        raise ConfigError("base", f"cycle in base compositions: {' -> '.join((*seen, base))}", source)
    base_raw, _, _ = _resolve(base, (*seen, name_or_path))
    merged = _merge(base_raw, {k: v for k, v in raw.items() if k != "base"})
    return merged, source, name


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of mappings; ``None`` in ``over`` deletes the key.

    A slot that names a different ``component`` starts afresh: the options of the component
    it replaces do not carry over (an aux ``weight`` does).
    """
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    if "component" in over and over["component"] != base.get("component"):
        base = _fresh_slot(base)
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base`` as a ``base:`` composition is (``None`` deletes)."""
    return _merge(base, over)


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    parts = key.split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {show_value(item)}: expected KEY=VALUE with a dotted KEY, e.g. model.prior.hidden=256")
    shown = ".".join(map(show_key, parts))
    value = loads(text, source=f"--set {shown}")
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(map(show_key, parts[: i + 1]))
            raise UserError(f"--set {shown}: {where} is not a mapping (it holds {show_value(child)})")
        node = child
    if value is None:
        node.pop(parts[-1], None)
        return
    if parts[-1] == "component" and node.get("component") not in (None, value):
        kept = _fresh_slot(node)
        node.clear()
        node.update(kept)
    node[parts[-1]] = value


def _fresh_slot(spec: dict) -> dict:
    # what the engine reads itself is not the replaced component's: it stays
    return {k: v for k, v in spec.items() if k in ("weight", "flow")}


# --------------------------------------------------------------------------- validation


def validate(raw: dict, registry: Registry, source: str = "<composition>", name: str = "custom") -> Composition:
    """Check every key, component name, option and type; fill in defaults."""
    for key in raw:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(show_key(key), f"unknown key{hint} (expected: {', '.join(TOP_KEYS)})", source)
    model = raw.get("model")
    if not isinstance(model, dict):
        raise ConfigError("model", "expected a mapping of slots (decoder, likelihood, ...)", source)
    for key in model:
        if key not in (*MODEL_SLOTS, "aux", "latent_dim"):
            raise ConfigError(
                f"model.{show_key(key)}", f"unknown slot (slots: {', '.join(MODEL_SLOTS)}, aux, latent_dim)", source
            )

    slots: dict[str, SlotSpec] = {}
    for slot in MODEL_SLOTS:
        if model.get(slot) is not None:
            slots[slot] = _slot_spec(registry, slot, model[slot], f"model.{slot}", source)
    for slot in ("likelihood", "decoder"):
        if slot not in slots:
            raise ConfigError(f"model.{slot}", "missing slot: every model needs one", source)

    decoder_cls = registry.get("decoder", slots["decoder"].component).cls
    latent_dim = model.get("latent_dim", 0)
    if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 0:
        raise ConfigError("model.latent_dim", f"expected a non-negative int, got {latent_dim!r}", source)
    if decoder_cls.uses_latent:
        for slot in ("encoder", "prior"):
            if slot not in slots:
                raise ConfigError(
                    f"model.{slot}",
                    f"missing slot: decoder {decoder_cls.name!r} draws latents, so it needs one",
                    source,
                )
        if latent_dim < 1:
            raise ConfigError("model.latent_dim", f"decoder {decoder_cls.name!r} needs latent_dim >= 1", source)
    else:
        for slot in ("encoder", "prior"):
            if slot in slots:
                raise ConfigError(
                    f"model.{slot}",
                    f"decoder {decoder_cls.name!r} has no latent variables; remove this slot",
                    source,
                )
    if "static" in slots and not decoder_cls.reads_static:
        raise ConfigError("model.static", f"decoder {decoder_cls.name!r} does not read a sequence-level latent, "
                          "so f would be unused; remove this slot or choose a decoder that reads it "
                          f"({_static_readers(registry) or 'none is registered'})", source)  # fmt: skip
    if decoder_cls.reads_static and "static" not in slots:
        static = ", ".join(e.name for e in registry.entries("static")) or "none is registered"
        raise ConfigError("model.static", f"missing slot: decoder {decoder_cls.name!r} reads a sequence-level "
                          f"latent f; add model.static with a component ({static})", source)  # fmt: skip

    aux_raw = model.get("aux") or {}
    if not isinstance(aux_raw, dict):
        raise ConfigError("model.aux", "expected a mapping from a name to {component: ..., options}", source)
    for key in (k for k in aux_raw if not isinstance(k, str) or not k):
        raise ConfigError(f"model.aux.{show_key(key)}", "expected a name for this objective (a string)", source)
    aux = {key: _slot_spec(registry, "aux", spec, f"model.aux.{show_key(key)}", source)
           for key, spec in aux_raw.items()}  # fmt: skip

    objective = parse(ObjectiveConfig, raw.get("objective"), "objective", source)
    flow = slots["encoder"].flow if "encoder" in slots else None
    if flow is not None and flow.steps > 0 and decoder_cls.parallel_latents:  # the flow acts inside the step
        raise ConfigError("model.encoder.flow.steps", f"expected 0: decoder {decoder_cls.name!r} draws latent layers "
                          "without a step loop, where no flow acts; remove model.encoder.flow", source)  # fmt: skip
    if flow is not None and flow.steps > 0 and objective.free_bits > 0:
        raise ConfigError("objective.free_bits", FREE_BITS_WITH_FLOW, source)
    train = parse(TrainConfig, raw.get("train"), "train", source)
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError("description", f"expected text, got {show_value(description)}", source)
    return Composition(name, source, description, latent_dim, slots, aux, objective, train)


def _slot_spec(registry: Registry, kind: str, spec: Any, path: str, source: str) -> SlotSpec:
    if not isinstance(spec, dict) or "component" not in spec:
        raise ConfigError(path, "expected a mapping with a `component` key and its options", source)
    spec = dict(spec)
    component = spec.pop("component")
    weight = None
    if kind == "aux":
        weight = parse(_Weight, {"weight": spec.pop("weight", 1.0)}, path, source).weight
    flow = None
    if kind == "encoder":
        flow = parse(FlowOptions, spec.pop("flow", None), f"{path}.flow", source)
    if not isinstance(component, str):
        raise ConfigError(f"{path}.component", f"expected a component name, got {show_value(component)}", source)
    try:
        entry = registry.get(kind, component)
    except UserError as error:
        raise ConfigError(f"{path}.component", str(error), source) from None
    options = parse(entry.cls.Options, spec, path, source)
    return SlotSpec(component, options, path, weight, flow)


@dataclass
class _Weight:
    weight: Schedule


# --------------------------------------------------------------------------- building


def _static_readers(registry: Registry) -> str:
    return ", ".join(e.name for e in registry.entries("decoder") if e.cls.reads_static)


def build_model(comp: Composition, x_dim: int, registry: Registry | None = None) -> SequenceModel:
    """Instantiate the components in build order; dimension mismatches, and parts whose
    declarations do not fit (:mod:`seqvae.fitting`), raise ConfigError."""
    registry = registry or default_registry()
    ctx = BuildContext(x_dim=x_dim, z_dim=comp.latent_dim)

    def make(kind: str, spec: SlotSpec):
        ctx.path = spec.path
        cls = registry.get(kind, spec.component).cls
        try:
            return cls(spec.options, ctx)
        except ConfigError as error:
            error.source = error.source or comp.source
            raise

    likelihood = make("likelihood", comp.slots["likelihood"])
    ctx.likelihood = likelihood
    ctx.param_dim = likelihood.param_dim(x_dim)
    static = make("static", comp.slots["static"]) if "static" in comp.slots else None
    ctx.static_dim = static.static_dim if static is not None else 0
    decoder = make("decoder", comp.slots["decoder"])
    ctx.cond_dim, ctx.context_dim = decoder.cond_dim, decoder.context_dim
    # each part is checked against the decoder's and encoder's declarations before it is built
    fitting.check_decoder(decoder, comp.slots["decoder"], ctx, comp.source)
    encoder = prior = flow = None
    if decoder.uses_latent:
        fitting.check_fit("encoder", comp.slots["encoder"], comp, ctx, registry)
        encoder = make("encoder", comp.slots["encoder"])
        fitting.record_encoder(encoder, comp.slots["encoder"], ctx, comp.source)
        flow = build_flow(comp.slots["encoder"].flow, comp.latent_dim, ctx.cond_dim)
        fitting.check_fit("prior", comp.slots["prior"], comp, ctx, registry)
        prior = make("prior", comp.slots["prior"])
        fitting.check_cond_is_read(comp, ctx, registry)
    aux = {}
    for key, spec in comp.aux.items():
        fitting.check_fit("aux", spec, comp, ctx, registry)
        aux[key] = make("aux", spec)
    return SequenceModel(likelihood, decoder, encoder, prior, aux, x_dim=x_dim, z_dim=comp.latent_dim, flow=flow,
                         static=static)
