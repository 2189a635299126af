"""Data sets: the properties every registered data set must have, checked on data the caller
provides (a miniature corpus written by the test) or, for an embedded one, on its own data.

- ``declarations``: ``unit`` one of :data:`seqvae.data.UNITS`, ``support`` one of
  :data:`seqvae.data.SUPPORTS` (or None: set by the instance), ``likelihood`` a registered
  likelihood of that support, ``expected_files`` and ``source_hint`` (for the not-found
  message) unless ``embedded``; after opening, the instance's ``unit``, ``support`` and
  ``likelihood`` too;
- ``not-found``: opened on an empty folder it raises a :class:`~seqvae.errors.UserError` that
  names the folder (not a traceback);
- ``splits``: ``train``, ``valid`` and ``test`` are non-empty :class:`~seqvae.data.Split`
  objects; an unknown split name is a UserError;
- ``shapes``: u and x (N, T, D) with the same D in every split (the data set's ``x_dim``),
  mask (N, T); a batch is float32, time-major (T', B, D), trimmed to its longest row;
- ``masks``: 0 or 1, the real steps a prefix of each row, at least one per row;
- ``support``: u and x finite everywhere; on real steps x holds only 0 and 1 (binary), or one
  whole class id in [0, classes) per step (categorical, with ``classes`` set);
- ``inputs``: u_t = x_{t-1} on every real step t > 1 (the engine's input convention).

At most the first 256 rows of each split are read, so a prepared corpus is checked in moments.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqvae.data import SPLITS, SUPPORTS, UNITS, Dataset, Split
from seqvae.errors import UserError
from seqvae.options import parse
from seqvae.registry import Registry, default_registry
from seqvae.testing.properties import Failure, Property, PropertyReport, run_properties

ROWS = 256


@dataclass
class DatasetSubject:
    """A registered data set class, and the instance opened on the caller's data."""

    label: str
    cls: type[Dataset]
    path: Path | None
    options: Any
    registry: Registry
    notes: list[str] = field(default_factory=list)

    @cached_property
    def dataset(self) -> Dataset:
        try:
            return self.cls(self.path, self.options)
        except UserError as error:
            raise Failure(f"cannot be opened on {self.path}: {error}") from None

    def rows(self, name: str) -> dict[str, np.ndarray]:
        split = self.dataset.split(name)
        return {key: np.asarray(getattr(split, key)[:ROWS], dtype=np.float64) for key in ("u", "x", "mask")}


def _likelihood_problem(s: DatasetSubject, support: Any, likelihood: Any, owner: str) -> str | None:
    if likelihood is None:
        return None if support is None else f"{owner} declares support {support!r} but no likelihood"
    entry = s.registry.find("likelihood", likelihood) if isinstance(likelihood, str) else None
    if entry is None:
        return f"{owner} names likelihood {likelihood!r}, which is not a registered likelihood"
    declared = getattr(entry.cls, "support", None)
    if support is not None and declared is not None and declared != support:
        return f"{owner} names likelihood {likelihood!r}, which models {declared} values, for {support} data"
    return None


def check_declarations(s: DatasetSubject) -> None:
    """Class and instance attributes: unit in UNITS, support in SUPPORTS (None on the class
    only), a registered likelihood of that support, expected_files and source_hint unless
    embedded."""
    problems = []
    for owner, obj in (("the class", s.cls), ("the opened data set", s.dataset)):
        if obj.unit not in UNITS:
            problems.append(f"{owner} has unit {obj.unit!r}; expected one of {', '.join(UNITS)}")
        if obj.support not in SUPPORTS and not (obj is s.cls and obj.support is None):
            problems.append(f"{owner} has support {obj.support!r}; expected one of {', '.join(SUPPORTS)}")
        problems.append(_likelihood_problem(s, obj.support, obj.likelihood, owner))
    if not s.cls.embedded:
        for key in ("expected_files", "source_hint"):
            if not str(getattr(s.cls, key, "")).strip():
                problems.append(f"{key} is empty: the not-found message quotes it")
    problems = [p for p in problems if p]
    if problems:
        raise Failure("; ".join(problems))


def check_not_found(s: DatasetSubject) -> None:
    """Opened on an empty folder, the data set raises a UserError naming that folder."""
    with tempfile.TemporaryDirectory(prefix="seqvae-empty-") as empty:
        try:
            s.cls(Path(empty), s.options)
        except UserError as error:
            if empty not in str(error):
                raise Failure(f"on an empty folder its UserError does not name the folder: {error}") from None
            return
        except Exception as error:  # noqa: BLE001
            raise Failure(f"on an empty folder it raises {type(error).__name__} ({error}), not a UserError "
                          "naming the folder and the files expected") from None  # fmt: skip
    raise Failure("opened on an empty folder without an error: an empty corpus would train on nothing")


def check_splits(s: DatasetSubject) -> None:
    """train, valid and test are non-empty Splits; split('no-such-split') is a UserError."""
    for name in SPLITS:
        split = s.dataset.split(name)
        if not isinstance(split, Split):
            raise Failure(f"split({name!r}) returned a {type(split).__name__}, not a seqvae.data.Split")
        if len(split) == 0:
            raise Failure(f"split {name!r} is empty")
    try:
        s.dataset.split("no-such-split")
    except UserError:
        return
    except Exception as error:  # noqa: BLE001
        raise Failure(f"split('no-such-split') raises {type(error).__name__}, not a UserError") from None
    raise Failure("split('no-such-split') returns a split instead of a UserError")


def check_shapes(s: DatasetSubject) -> None:
    """u and x (N, T, D), mask (N, T), one D in every split equal to x_dim; batch(rows) is
    float32 (T', B, D) and (T', B) with T' the longest real length among its rows."""
    x_dim = s.dataset.x_dim
    for name in SPLITS:
        split = s.dataset.split(name)
        u, x, mask = (tuple(getattr(split, key).shape) for key in ("u", "x", "mask"))
        if len(x) != 3 or u != x or mask != x[:2] or x[2] != x_dim:
            raise Failure(f"split {name!r}: u {u}, x {x}, mask {mask}; expected u and x (N, T, {x_dim}), mask (N, T)")
        rows = list(range(min(4, len(split))))
        batch = split.batch(rows)
        longest = int(np.asarray(split.mask[: len(rows)]).sum(1).max())
        if batch.x.dtype != torch.float32 or tuple(batch.x.shape) != (longest, len(rows), x_dim):
            raise Failure(f"split {name!r}: batch of rows {rows} is {batch.x.dtype} {tuple(batch.x.shape)}; "
                          f"expected float32 ({longest}, {len(rows)}, {x_dim})")  # fmt: skip


def check_masks(s: DatasetSubject) -> None:
    """Every mask value is 0 or 1; the real steps of each row come first; every row has one."""
    for name in SPLITS:
        mask = s.rows(name)["mask"]
        if not np.isin(mask, (0.0, 1.0)).all():
            raise Failure(f"split {name!r}: mask holds values other than 0 and 1")
        rising = np.argwhere(mask[:, 1:] > mask[:, :-1])
        if len(rising):
            row, step = (int(i) for i in rising[0])
            raise Failure(f"split {name!r}: the mask of row {row} is not a prefix (0 at step {step}, 1 at step "
                          f"{step + 1}); real steps must come first")  # fmt: skip
        empty = np.flatnonzero(mask.sum(1) == 0)
        if len(empty):
            raise Failure(f"split {name!r}: row {int(empty[0])} has no real step")


def check_support(s: DatasetSubject) -> None:
    """u and x are finite everywhere (padding too: 0 * NaN is NaN in a masked sum); on real
    steps x is 0/1 for binary data, a whole class id in [0, classes) for categorical data."""
    support, classes = s.dataset.support, s.dataset.classes
    for name in SPLITS:
        rows = s.rows(name)
        for key in ("u", "x"):
            if not np.isfinite(rows[key]).all():
                raise Failure(f"split {name!r}: {key} holds NaN or Inf (padding included)")
        real = rows["x"][rows["mask"] == 1]
        if support == "binary" and not np.isin(real, (0.0, 1.0)).all():
            bad = real[~np.isin(real, (0.0, 1.0))][0]
            raise Failure(f"split {name!r}: support is binary, but x holds {bad:g} on a real step")
        if support == "categorical":
            if real.shape[-1] != 1 or not isinstance(classes, int) or classes < 2:
                raise Failure(f"categorical data needs one class id per step (D = 1) and classes >= 2; got D = "
                              f"{real.shape[-1]}, classes = {classes!r}")  # fmt: skip
            wrong = (real < 0) | (real >= classes) | (real != np.round(real))
            if wrong.any():
                raise Failure(f"split {name!r}: x holds {real[wrong][0]:g}, not a class id in [0, {classes})")


def check_inputs(s: DatasetSubject) -> None:
    """u_t equals x_{t-1} on every real step t > 1 of every row (inputs are the previous targets)."""
    for name in SPLITS:
        rows = s.rows(name)
        both = (rows["mask"][:, 1:] == 1) & (rows["mask"][:, :-1] == 1)
        differ = both & ~np.isclose(rows["u"][:, 1:], rows["x"][:, :-1], atol=1e-6).all(-1)
        if differ.any():
            row, step = (int(i) for i in np.argwhere(differ)[0])
            raise Failure(f"split {name!r}: u at step {step + 1} of row {row} is not x at step {step} "
                          "(u_t = x_{t-1}: the model reads the previous observation)")  # fmt: skip


DATASET_CHECKS = (
    Property("declarations", check_declarations),
    Property("not-found", check_not_found),
    Property("splits", check_splits),
    Property("shapes", check_shapes),
    Property("masks", check_masks),
    Property("support", check_support),
    Property("inputs", check_inputs),
)


def check_dataset(
    name: str,
    path: str | Path | None = None,
    *,
    registry: Registry | None = None,
    options: dict | None = None,
    checks: tuple[Property, ...] = DATASET_CHECKS,
) -> PropertyReport:
    """Every data-set property on the registered data set ``name``, opened on ``path`` (None for
    an embedded data set's own data) with ``options`` (a mapping, as ``--data-option`` values);
    ConformanceError names it, its plugin and each property that failed."""
    registry = registry or default_registry()
    entry = registry.get("dataset", name)
    label = f"dataset {name!r} (plugin {entry.provider!r})"
    parsed = parse(entry.cls.Options, dict(options or {}), name, source="--data-option")
    subject = DatasetSubject(label, entry.cls, Path(path) if path is not None else None, parsed, registry)
    return run_properties(label, subject, checks)


__all__ = ["DATASET_CHECKS", "DatasetSubject", "check_dataset"]
