"""A run's whole state, as one object the trainer saves in every checkpoint and restores.

Restored from ``last.pt``, a run continues exactly where that checkpoint was taken: a run killed
at any moment and started again with the same command ends bitwise equal to one that was never
interrupted (on CPU, with the same threads). The state is:

- the model's and the optimiser's state dicts;
- ``step``, the optimiser updates done. The schedules (KL and auxiliary weights, the learning
  rate's decay) are pure functions of it and of the updates per epoch, so they need no state of
  their own: the trainer sets each update's rate from ``train.lr_decay``;
- the position in the data order: ``epoch`` (passes begun) and ``batch`` (batches of that pass
  consumed, updates and skipped updates alike), with the shuffle generator's state from before
  that pass's order was drawn, so the order is drawn again and its first ``batch`` passed over;
- every random generator: torch's CPU generator, CUDA's (when CUDA is in use) and the shuffle
  generator (seqvae uses no numpy or ``random`` generator in training);
- the best validation so far, and the counters: training seconds, skipped updates.

Every entry is a tensor or a primitive, so a checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoint import atomic_write_text

FORMAT = 2
"""Checkpoints with ``format`` 2 hold the position in the data order; older ones (no ``format``)
restart their epoch on resume."""


@dataclass
class RunState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    step: int = 0
    epoch: int = 0
    batch: int = 0
    epoch_rng: torch.Tensor | None = None
    """The shuffle generator's state before this epoch's order was drawn."""
    train_seconds: float = 0.0
    best: dict[str, float] = field(default_factory=lambda: {"elbo": -math.inf})
    skipped_steps: int = 0
    """Updates skipped for a non-finite loss or gradient norm, in all."""
    consecutive_skips: int = 0
    one_device: bool = False
    """One GPU per process (data-parallel): only the current device's CUDA generator is this
    process's to save and restore (every rank's is in the same state)."""

    def __post_init__(self) -> None:
        if self.epoch_rng is None:
            self.epoch_rng = self.shuffle.get_state()

    def next_epoch(self) -> None:
        """A pass ended: the next one's order is drawn from the generator as it is now."""
        self.epoch, self.batch = self.epoch + 1, 0
        self.epoch_rng = self.shuffle.get_state()

    def state_dict(self) -> dict[str, Any]:
        cuda = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = [torch.cuda.get_rng_state()] if self.one_device else torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": self.step, "train_seconds": self.train_seconds, "best_valid": dict(self.best),
            "position": {"epoch": self.epoch, "batch": self.batch},
            "counters": {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips},
            "rng": {"torch": torch.get_rng_state(), "cuda": cuda, "shuffle": self.epoch_rng.clone()},
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.train_seconds = state["step"], state.get("train_seconds", 0.0)
        self.best = state.get("best_valid") or {"elbo": -math.inf}
        rng = state["rng"]
        if state.get("format", 1) < FORMAT:  # rng was torch's state; the epoch starts over
            rng = {"torch": rng, "cuda": [], "shuffle": state["shuffle_rng"]}
        position, counters = state.get("position", {}), state.get("counters", {})
        self.epoch, self.batch = position.get("epoch", 0), position.get("batch", 0)
        self.skipped_steps = counters.get("skipped_steps", 0)
        self.consecutive_skips = counters.get("consecutive_skips", 0)
        # generator states are CPU byte tensors, whatever map_location moved the rest to
        torch.set_rng_state(rng["torch"].cpu())
        # resumed on a machine with other GPUs (or none), the CUDA stream cannot be the same one
        if rng["cuda"] and torch.cuda.is_available() and self.one_device:
            torch.cuda.set_rng_state(rng["cuda"][0].cpu())  # rank 0's device; ours is in the same state
        elif rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.epoch_rng = rng["shuffle"].cpu()
        self.shuffle.set_state(self.epoch_rng)

    def finite(self) -> bool:
        """Whether every floating-point tensor of the model and the optimiser is finite."""
        tensors = list(self.model.state_dict().values())
        for per_param in self.optimizer.state_dict()["state"].values():
            tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def truncate_log(path: Path, step: int) -> None:
    """Keep the lines of a JSON-lines log up to ``step``: a resumed run replays the later ones
    identically, so they would be duplicated. A line cut short by a kill ends the log."""
    if not path.exists():
        return
    text = path.read_text()
    kept = []
    for line in text.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not line.endswith("\n") or not isinstance(record, dict) or record.get("step", math.inf) > step:
            break
        kept.append(line)
    if "".join(kept) != text:
        atomic_write_text(path, "".join(kept))
