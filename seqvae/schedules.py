"""Schedules of the training loop, one mechanism for every model.

- :class:`Schedule`: a weight (KL temperature, an auxiliary cost's weight) that moves linearly
  from ``start`` to ``end``, by ``step`` per update or per epoch;
- :class:`Decay`: exponential learning-rate decay, by update or by epoch, after a warm period.

Both are read at a :class:`Progress`: the number of optimiser updates done and the epochs they
make (fractional: update / updates per epoch). A schedule by epoch therefore moves a little at
every update ("KL temperature from 0.2 to 1 over the first 20 epochs" is ``start: 0.2, end: 1,
step: 0.04, per: epoch``), while a decay counts whole periods ("learning rate / 1.2 per epoch
after 20 epochs" is ``factor: 0.8333, every: 1, start: 20, per: epoch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Per = Literal["update", "epoch"]


@dataclass(frozen=True)
class Progress:
    """Where training is: ``update`` optimiser updates done, ``epoch`` = update / updates per
    epoch (None where epochs are not defined, e.g. a single batch in a test)."""

    update: int = 0
    epoch: float | None = None

    def read(self, per: Per, where: str) -> float:
        if per == "update":
            return float(self.update)
        if self.epoch is None:
            raise ValueError(f"{where}: a schedule by epoch needs the number of updates per epoch")
        return self.epoch


def progress(update: int, updates_per_epoch: int | None) -> Progress:
    return Progress(update, update / updates_per_epoch if updates_per_epoch else None)


@dataclass
class Schedule:
    """A weight that moves linearly from ``start`` to ``end`` by ``step`` per update (or per
    epoch, with ``per: epoch``)."""

    start: float = 1.0
    end: float | None = None
    """None: stays at ``start``."""
    step: float = 5e-5
    per: Per = "update"

    @classmethod
    def from_scalar(cls, value: float) -> Schedule:
        return cls(start=value, end=value)

    def at(self, when: int | Progress) -> float:
        """The weight after ``when`` updates (an int) or at a :class:`Progress`."""
        when = when if isinstance(when, Progress) else Progress(int(when))
        end = self.start if self.end is None else self.end
        if end == self.start:
            return self.start
        moved = self.step * when.read(self.per, "schedule")
        if end >= self.start:
            return min(end, self.start + moved)
        return max(end, self.start - moved)

    @property
    def off(self) -> bool:
        """Zero at every update: the term is not part of the model at all."""
        return self.start == 0.0 and (self.end is None or self.end == 0.0)

    def validate(self) -> str | None:
        if not math.isfinite(self.step) or self.step < 0:
            return "step: expected a finite value >= 0"
        if not math.isfinite(self.start) or (self.end is not None and not math.isfinite(self.end)):
            return "start/end: expected finite values"
        return None


@dataclass
class Decay:
    """Exponential learning-rate decay: the rate is ``lr * factor ** n``, where n counts the
    whole periods of ``every`` updates (or epochs, ``per: epoch``) completed after ``start``.
    ``factor: 1`` (the default) is no decay."""

    factor: float = 1.0
    every: float = 1.0
    start: float = 0.0
    per: Per = "epoch"

    def at(self, when: Progress) -> float:
        """The multiplier of the base learning rate at ``when``."""
        if self.factor == 1.0:
            return 1.0
        t = when.read(self.per, "train.lr_decay")
        if t < self.start:
            return 1.0
        return self.factor ** math.floor((t - self.start) / self.every + 1e-9)

    def validate(self) -> str | None:
        if not 0.0 < self.factor <= 1.0:
            return f"factor: expected a value in (0, 1], got {self.factor}"
        if not self.every > 0:
            return f"every: expected a positive number, got {self.every}"
        if not self.start >= 0:
            return f"start: expected a number >= 0, got {self.start}"
        return None
