"""The ``npz`` data set: the layout of the preprocessed TIMIT file.

Keys ``u_train, x_train, u_valid, x_valid, u_test, x_test`` hold float arrays (N, T, D) with
u_t = x_{t-1}; ``mask_test`` (and optionally ``mask_train`` / ``mask_valid``) hold (N, T) masks.
A split without a mask is all real steps.
"""

from __future__ import annotations

import zipfile

import numpy as np
import torch

from seqvae import hookimpl
from seqvae.data import Dataset, Split
from seqvae.errors import UserError

SPLITS = ("train", "valid", "test")


class NpzDataset(Dataset):
    """Pre-framed sequences from one ``.npz`` file."""

    name = "npz"

    def __init__(self, path, options) -> None:
        super().__init__(path, options)
        if self.path.is_dir():
            candidates = sorted(self.path.glob("*.npz"))
            if len(candidates) != 1:
                raise UserError(f"{self.path}: expected exactly one .npz file in this folder, found {len(candidates)}")
            self.path = candidates[0]
        if not self.path.is_file():
            raise UserError(f"{self.path}: npz file not found")
        try:
            self._arrays = np.load(self.path, allow_pickle=False)
            keys = set(self._arrays.files)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise UserError(f"{self.path}: not a readable .npz file ({error})") from error
        needed = {f"{kind}_{split}" for kind in ("u", "x") for split in SPLITS} | {"mask_test"}
        missing = sorted(needed - keys)
        if missing:
            raise UserError(f"{self.path}: missing keys {', '.join(missing)} (has: {', '.join(sorted(keys))})")

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"npz data set: unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        u = self._read(f"u_{name}", 3)
        x = self._read(f"x_{name}", 3)
        mask_key = f"mask_{name}"
        if mask_key in self._arrays.files:
            mask = self._read(mask_key, 2)
        else:
            mask = torch.ones(x.shape[:2])
        if u.shape != x.shape or mask.shape != x.shape[:2]:
            raise UserError(
                f"{self.path}: split {name!r} shapes do not fit: u {tuple(u.shape)}, "
                f"x {tuple(x.shape)}, mask {tuple(mask.shape)}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()) or bool((mask[:, 1:] > mask[:, :-1]).any()):
            raise UserError(f"{self.path}: {mask_key} must be 0/1 with the real steps first in each row")
        return Split(u, x, mask)

    def _read(self, key: str, ndim: int) -> torch.Tensor:
        array = self._arrays[key]
        if array.ndim != ndim:
            raise UserError(f"{self.path}: {key} has shape {array.shape}; expected {ndim} dimensions")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not torch.isfinite(tensor).all():
            raise UserError(f"{self.path}: {key} contains NaN or Inf values")
        return tensor


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(NpzDataset)
