"""Data: the data-set slot and time-major batching.

A data set turns files on disk into splits of padded sequences: ``u`` (inputs, u_t = x_{t-1}),
``x`` (targets) and ``mask`` (1 on real steps, a prefix of every row). Models see time-major
batches (T, B, D).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from seqvae.errors import UserError
from seqvae.slots import NoOptions


@dataclass
class Batch:
    """A time-major batch."""

    u: Tensor  # (T, B, D)
    x: Tensor  # (T, B, D)
    mask: Tensor  # (T, B)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.u.to(device), self.x.to(device), self.mask.to(device))


@dataclass
class Split:
    """One split held as batch-major tensors (N, T, D); padding is trimmed per batch."""

    u: Tensor
    x: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        n, steps = self.x.shape[:2]
        if self.u.shape != self.x.shape or self.mask.shape != (n, steps):
            raise UserError(
                f"split shapes do not fit: u {tuple(self.u.shape)}, x {tuple(self.x.shape)}, "
                f"mask {tuple(self.mask.shape)}; expected u and x (N, T, D) and mask (N, T)"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def x_dim(self) -> int:
        return self.x.shape[-1]

    @property
    def steps(self) -> int:
        """Number of real (unmasked) steps in the split."""
        return int(self.mask.sum().item())

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            mask = self.mask[idx]
            # trim trailing all-padding steps: whole-utterance test sets vary a lot in length
            length = int(mask.sum(1).max().item())
            yield Batch(
                self.u[idx, :length].transpose(0, 1),
                self.x[idx, :length].transpose(0, 1),
                mask[:, :length].transpose(0, 1),
            )


class Dataset(ABC):
    """Base of registered data sets: ``Cls(path, options)`` then :meth:`split` by name."""

    slot: ClassVar[str] = "dataset"
    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    unit: ClassVar[str] = "nats per sequence"

    def __init__(self, path: Path, options: object) -> None:
        self.path = Path(path)
        self.options = options

    @abstractmethod
    def split(self, name: str) -> Split:
        """The split ``train``, ``valid`` or ``test``."""
