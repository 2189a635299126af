"""The conformance suite's entry points: whole-subject checks and pytest-parametrisable cases.

One call per subject, from any test::

    from seqvae.testing import conformance

    conformance.check_composition("my-model.yaml", registry=registry)   # or a name, mapping
    conformance.check_component("prior", "my-prior", registry=registry)

Likelihoods are also checked as distributions on their own (normalised, consistent with their
sampler), and data sets on data you provide::

    conformance.check_likelihood("my-likelihood", registry=registry)
    conformance.check_dataset("my-data", "tests/data/my-data", registry=registry)

or one pytest test per (subject, property)::

    CASES = conformance.composition_cases() + conformance.component_cases(exclude_covered=True)

    @pytest.mark.parametrize("check", conformance.CHECKS, ids=str)
    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_conformance(case, check):
        conformance.run(case, check)

Both shrink the composition first (:func:`seqvae.testing.shrink.shrink`); pass ``overrides``
(``--set`` syntax) for what the generic rule gets wrong. A failure is a
:class:`ConformanceError` naming the subject, each failed property, and the component the
evidence points at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seqvae.composition import Composition, builtin_compositions
from seqvae.registry import Registry, default_registry
from seqvae.slots import SLOTS
from seqvae.testing.checks import CHECKS, Check
from seqvae.testing.datasets import DATASET_CHECKS, check_dataset
from seqvae.testing.likelihoods import LIKELIHOOD_CHECKS, check_likelihood
from seqvae.testing.subjects import (
    Bases,
    Case,
    ConformanceError,
    ConformanceSkip,
    composition_name,
)

COMPONENT_KINDS = tuple(SLOTS)
"""The kinds checked inside compositions: every model slot (data sets are checked on their own,
by :func:`check_dataset`, and likelihoods also as distributions, by :func:`check_likelihood`)."""

Compositions = Mapping[str, Any] | Iterable[Any]
"""Names, YAML paths or Composition objects, or a mapping from a name to any of those or to a
raw composition mapping (which may start from another with ``base:``)."""


@dataclass
class Report:
    """What passed, for a subject that conforms."""

    label: str
    passed: list[str]
    composition: Composition
    """The tiny composition the checks ran on."""
    x_dim: int


def composition_cases(
    compositions: Compositions | None = None,
    *,
    registry: Registry | None = None,
    x_dim: int = 3,
    overrides: Sequence[str] = (),
    device: str = "cpu",
) -> list[Case]:
    """One case per composition; by default every built-in one (registry.yaml)."""
    registry = registry or default_registry()
    return [
        Case("composition", name, registry, source=source, x_dim=x_dim,
             overrides=tuple(overrides), device=device)
        for name, source in _named(compositions)
    ]  # fmt: skip


def component_cases(
    *,
    registry: Registry | None = None,
    compositions: Compositions | None = None,
    kinds: Sequence[str] = COMPONENT_KINDS,
    x_dim: int = 3,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    exclude_covered: bool = False,
) -> list[Case]:
    """One case per registered component of each kind, to be placed in ``compositions``
    (default: the built-in ones), preferring one that already uses it.

    ``exclude_covered`` leaves out components that one of ``compositions`` already uses: run
    :func:`composition_cases` on the same compositions and those are checked there, in place.
    """
    registry = registry or default_registry()
    bases = Bases(_named(compositions))
    covered = covered_components(bases, registry) if exclude_covered else {}
    return [
        Case(kind, entry.name, registry, bases=bases, x_dim=x_dim, overrides=tuple(overrides),
             device=device)
        for kind in kinds for entry in registry.entries(kind) if (kind, entry.name) not in covered
    ]  # fmt: skip


def covered_components(
    compositions: Compositions | Bases | None = None, registry: Registry | None = None
) -> dict[tuple[str, str], str]:
    """(kind, name) of every component that one of ``compositions`` uses, mapped to the first
    composition that does. Compositions that do not load are left out."""
    registry = registry or default_registry()
    bases = compositions if isinstance(compositions, Bases) else Bases(_named(compositions))
    out: dict[tuple[str, str], str] = {}
    for comp in bases.load(registry):
        if isinstance(comp, Composition):
            specs = [(slot, spec) for slot, spec in comp.slots.items()]
            specs += [("aux", spec) for spec in comp.aux.values()]
            for kind, spec in specs:
                out.setdefault((kind, spec.component), comp.name)
    return out


def run(case: Case, check: Check) -> None:
    """Run one property on one case inside pytest; a case that cannot be tested is skipped."""
    try:
        subject = case.resolve()
    except ConformanceSkip as skip:
        import pytest

        pytest.skip(str(skip))
    check(subject)


def check_composition(
    comp: Any,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    x_dim: int = 3,
    overrides: Sequence[str] = (),
    checks: Sequence[Check] = CHECKS,
    device: str = "cpu",
) -> Report:
    """Run every check on one composition (a built-in name, a YAML path, a raw mapping or a
    Composition); ConformanceError lists every property that failed."""
    case = Case("composition", name or composition_name(comp), registry or default_registry(),
                source=comp, x_dim=x_dim, overrides=tuple(overrides), device=device)  # fmt: skip
    return run_all(case, checks)


def check_component(
    kind: str,
    name: str,
    *,
    registry: Registry | None = None,
    compositions: Compositions | None = None,
    x_dim: int = 3,
    overrides: Sequence[str] = (),
    checks: Sequence[Check] = CHECKS,
    device: str = "cpu",
) -> Report:
    """Run every check on one registered component, placed in one of ``compositions``
    (default: the built-in ones). ConformanceSkip if it fits none of them."""
    registry = registry or default_registry()
    registry.get(kind, name)  # an unknown name is a UserError listing close matches
    case = Case(kind, name, registry, bases=Bases(_named(compositions)), x_dim=x_dim,
                overrides=tuple(overrides), device=device)  # fmt: skip
    return run_all(case, checks)


def run_all(case: Case, checks: Sequence[Check] = CHECKS) -> Report:
    """Every check on one case, collecting all failures into one ConformanceError."""
    subject = case.resolve()
    failures: dict[str, str] = {}
    passed = []
    for check in checks:
        try:
            check(subject)
        except ConformanceError as error:
            failures.update(error.failures)
        else:
            passed.append(check.name)
    if failures:
        raise ConformanceError(subject.label, failures)
    return Report(subject.label, passed, subject.comp, subject.x_dim)


def _named(compositions: Compositions | None) -> list[tuple[str, Any]]:
    if compositions is None:
        return [(name, name) for name in builtin_compositions()]
    if isinstance(compositions, Mapping):
        return list(compositions.items())
    return [(composition_name(c), c) for c in compositions]


__all__ = [
    "CHECKS", "COMPONENT_KINDS", "DATASET_CHECKS", "LIKELIHOOD_CHECKS", "Case", "Check", "ConformanceError",
    "ConformanceSkip", "Report", "check_component", "check_composition", "check_dataset", "check_likelihood",
    "component_cases", "composition_cases",
    "covered_components", "run", "run_all",
]  # fmt: skip
