"""One way for ``train``, ``bench`` and ``eval`` to turn a model and a data set into a composition.

The layers, each applied on top of the one before:

1. the composition: a built-in name (registry.yaml ``compositions``) or a YAML file;
2. the preset: the data set's own (registry.yaml ``presets.<dataset>``) or ``--preset NAME``;
   a preset's ``all`` list applies to every model, ``models.<name>`` to one built-in
   composition, and ``datasets.<dataset>`` holds the same two lists for one data set (so that
   ``--preset paper`` carries each model's published settings per data set);
3. what the data requires of the likelihood: a likelihood declaring another support than the
   data's is replaced by the data set's (``bernoulli`` for piano rolls and binarised digits,
   ``categorical`` for word ids), and options the data set knows (the number of classes) are
   filled in where nothing else set them;
4. the user's ``--set`` overrides.

A likelihood the user chose that does not fit the data is refused with the complete ``--set``
line that fixes it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from seqvae.composition import (
    Composition,
    apply_overrides,
    builtin_compositions,
    builtin_presets,
    deep_merge,
    raw_composition,
    registry_file,
    validate,
)
from seqvae.data import Dataset
from seqvae.errors import UserError
from seqvae.registry import Registry, default_registry
from seqvae.yamlio import load_yaml


def preset_overrides(preset: str | None, dataset_name: str, model: str) -> list[str]:
    """``--set``-style overrides of a preset for ``model`` on ``dataset_name``.

    ``preset`` None means the data set's own preset, if registry.yaml has one (a preset given
    as a plain string is another preset's name). A named preset that has per-data-set sections
    but none for this data set is refused: its settings would silently not apply.
    """
    presets = builtin_presets()
    name = preset or dataset_name
    entry = presets.get(name)
    if isinstance(entry, str):  # `jsb: paper`: the data set's preset is another preset
        name, entry = entry, presets.get(entry)
    if entry is None:
        if preset is not None:
            raise UserError(
                f"--preset {preset!r}: unknown preset (presets in {registry_file()}: "
                f"{', '.join(k for k, v in presets.items() if isinstance(v, dict))})"
            )
        return []
    # per-model settings belong to the built-in compositions: a user's file named like one is
    # not that composition
    stem = model if model in builtin_compositions() else None
    parts = [entry]
    datasets = entry.get("datasets")
    if datasets is not None:
        if dataset_name not in datasets:
            raise UserError(
                f"--preset {name!r} has no settings for data set {dataset_name!r} "
                f"(it has: {', '.join(datasets)}); drop --preset or pick another data set"
            )
        parts.append(datasets[dataset_name] or {})
    out: list[str] = []
    for part in parts:
        out += list(part.get("all") or [])
        out += list((part.get("models") or {}).get(stem) or []) if stem else []
    return out


def resolve_composition(
    model: str,
    dataset: Dataset,
    dataset_name: str | None = None,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Composition:
    """The composition ``model`` for ``dataset``: preset, data requirements, then ``overrides``.

    A user's composition file wins over the preset for every key it sets itself (the preset
    fills in what the file inherits from its ``base:``), and a likelihood it names itself is
    the user's choice: refused with the fix if it cannot fit, never swapped.
    """
    registry = registry or default_registry()
    dataset_name = dataset_name or dataset.name
    raw, source, name = raw_composition(model, preset_overrides(preset, dataset_name, model))
    own = own_keys(model)
    raw = deep_merge(raw, own)
    if _likelihood_spec(own) is None:  # not a likelihood of the user's own choosing
        apply_overrides(raw, fit_likelihood(raw, dataset, registry))
    apply_overrides(raw, list(overrides))
    fill_likelihood_options(raw, dataset, registry)
    comp = validate(raw, registry, source=source, name=name)
    check_fit(comp, dataset, registry)
    return comp


def own_keys(model: str) -> dict:
    """What a user's composition file sets itself, and the user files it is based on (nothing
    for a built-in name: the preset is written for those)."""
    if model in builtin_compositions() or not Path(model).is_file():
        return {}
    own = load_yaml(Path(model))
    if not isinstance(own, dict):
        return {}  # validation names the problem
    base = own.get("base")
    inherited = own_keys(base) if isinstance(base, str) else {}
    return deep_merge(inherited, {k: v for k, v in own.items() if k not in ("base", "description")})


def fit_likelihood(raw: dict, dataset: Dataset, registry: Registry) -> list[str]:
    """The override that swaps a likelihood of the wrong support for the data set's own."""
    spec = _likelihood_spec(raw)
    if spec is None:
        return []  # validation names the problem
    entry = registry.find("likelihood", spec["component"])
    support = getattr(entry.cls, "support", None) if entry is not None else None
    wanted = getattr(dataset, "support", None)
    if support is None or wanted is None or support == wanted or not dataset.likelihood:
        return []
    return [f"model.likelihood.component={dataset.likelihood}"]


def fill_likelihood_options(raw: dict, dataset: Dataset, registry: Registry) -> None:
    """Options of the likelihood that the data set determines (its number of ``classes``),
    set where neither the composition nor the user set them."""
    spec = _likelihood_spec(raw)
    if spec is None:
        return
    entry = registry.find("likelihood", spec["component"])
    if entry is None or not dataclasses.is_dataclass(entry.cls.Options):
        return
    known = {"classes": getattr(dataset, "classes", None)}
    fields = {f.name for f in dataclasses.fields(entry.cls.Options)}
    for key, value in known.items():
        if value is not None and key in fields and key not in spec:
            spec[key] = value


def _likelihood_spec(raw: dict) -> dict | None:
    """The raw likelihood slot, if it is a mapping naming a component (the raw composition is
    not validated yet: ``model`` may be anything a file holds)."""
    model = raw.get("model")
    spec = model.get("likelihood") if isinstance(model, dict) else None
    return spec if isinstance(spec, dict) and isinstance(spec.get("component"), str) else None


def check_fit(comp: Composition, dataset: Dataset, registry: Registry | None = None) -> None:
    """Refuse a composition whose likelihood does not fit the data, with the fix."""
    registry = registry or default_registry()
    spec = comp.slots["likelihood"]
    cls = registry.get("likelihood", spec.component).cls
    dataset.check_model(cls, spec.options, where=spec.path)


def paper_number(published: dict[str, Any], dataset_name: str, dataset: Dataset, model: str) -> float | None:
    """The published number for ``model`` on this data, or None.

    ``published`` is registry.yaml's section: ``<dataset>: {model: number}`` for data sets whose
    protocol defines the data (every copy of TIMIT read by the protocol is the same data), and
    ``by_data: {<fingerprint>: {model: number}}`` for data defined by a file, which must then be
    exactly the file the number was measured on (``Dataset.fingerprint``), whatever reads it.
    """
    stem = Path(model).stem
    by_data = (published.get("by_data") or {}).get(getattr(dataset, "fingerprint", None)) or {}
    unit = by_data.get("unit")
    if stem in by_data and (unit is None or unit == dataset.unit):
        return float(by_data[stem])
    value = (published.get(dataset_name) or {}).get(stem)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
