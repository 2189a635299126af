"""Running the properties of a kind that is tested on its own, not inside a composition
(likelihoods as distributions, data sets): each property a function of the subject that raises
:class:`Failure`; every failure collected into one :class:`ConformanceError` naming the subject."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqvae.testing.subjects import ConformanceError, ConformanceSkip, seeded


class Failure(Exception):
    """A property does not hold; the message says how."""


@dataclass(frozen=True)
class Property:
    """One property of a subject of some kind."""

    name: str
    fn: Callable[[Any], None]

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    def __str__(self) -> str:
        return self.name


@dataclass
class PropertyReport:
    """What passed for a subject that conforms, and what could not be checked on it."""

    label: str
    passed: list[str]
    notes: list[str] = field(default_factory=list)


def run_properties(label: str, subject: Any, properties: Sequence[Property]) -> PropertyReport:
    """Every property on ``subject`` (seeded, single-threaded); ConformanceError lists each that
    failed, with an exception other than Failure reported as what it raised."""
    failures: dict[str, str] = {}
    passed: list[str] = []
    for prop in properties:
        try:
            with seeded(0):
                prop.fn(subject)
        except Failure as failure:
            failures[prop.name] = str(failure)
        except (ConformanceError, ConformanceSkip):
            raise
        except Exception as error:  # noqa: BLE001 -- a crash is a failure of this property
            failures[prop.name] = f"raised {type(error).__name__}: {error}"
        else:
            passed.append(prop.name)
    if failures:
        raise ConformanceError(label, failures)
    return PropertyReport(label, passed, list(getattr(subject, "notes", [])))


__all__ = ["Failure", "Property", "PropertyReport", "run_properties"]
