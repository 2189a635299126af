"""The ``npz`` data set: the layout of the preprocessed TIMIT file (and of SRNN's music files).

Keys ``u_train, x_train, u_valid, x_valid, u_test, x_test`` hold arrays (N, T, D) with
u_t = x_{t-1}; ``mask_test`` (and optionally ``mask_train`` / ``mask_valid``) hold (N, T) masks,
1 on the real steps, which come first in each row. A split without a mask is all real steps.

What the values are is read from the file unless given as options: only 0 and 1 in every x_*
array is binary (Bernoulli output, nats per step), anything else real (Gaussian output, nats per
sequence). NaN or Inf on a padded step (mask 0) is padding, as in SRNN's music files whose
``u_test`` holds NaN after each sequence's end: it is zeroed, with one line on stderr. On a real
step it is an error naming the key, row and step.
"""

from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqvae import hookimpl
from seqvae.data import SUPPORTS, UNITS, Dataset, Split
from seqvae.errors import UserError

SPLITS = ("train", "valid", "test")
LIKELIHOODS = {"binary": "bernoulli", "real": "gaussian", "categorical": "categorical"}
DEFAULT_UNITS = {
    "binary": "nats per step",
    "real": "nats per sequence",
    "categorical": "perplexity",
}


@dataclass
class Options:
    support: str | None = None
    """binary, real or categorical (one class id per step, D = 1); None: read from the values
    (only 0 and 1 in every x_* array: binary, else real)."""
    unit: str | None = None
    """How results are reported; None: nats per step for binary data, nats per sequence for
    real, perplexity for categorical."""

    def validate(self) -> str | None:
        if self.support is not None and self.support not in SUPPORTS:
            return (
                f"support={self.support!r} is not a support; expected one of {', '.join(SUPPORTS)}"
            )
        if self.unit is not None and self.unit not in UNITS:
            return f"unit={self.unit!r} is not a unit; expected one of {', '.join(UNITS)}"
        return None


class NpzDataset(Dataset):
    """Pre-framed sequences from one ``.npz`` file; binary or real values read from the file."""

    name = "npz"
    Options = Options
    support = None  # read from the file (or the support option)
    likelihood = None
    expected_files = (
        "one .npz file with u_train, x_train, u_valid, x_valid, u_test, x_test and mask_test"
    )
    source_hint = (
        "any preprocessed file in this layout you hold (e.g. timit_raw_batchsize64_seqlen40.npz)"
    )

    def __init__(self, path, options: Options | None = None) -> None:
        # another data set may pass its own options object (timit passes NoOptions)
        options = options if isinstance(options, Options) else Options()
        super().__init__(path, options)
        problem = options.validate()
        if problem:
            raise UserError(f"--data-option: {self.name}: {problem}")
        self.path = find_npz(self.path)
        self._splits = read_npz(self.path, self.name)
        self.support = options.support or infer_support(self._splits)
        check_values(self.path, self._splits, self.support)
        self.likelihood = LIKELIHOODS[self.support]
        self.unit = options.unit or DEFAULT_UNITS[self.support]
        if self.support == "categorical":
            self.classes = 1 + max(
                int(np.max(a, initial=0)) for s in self._splits.values() for a in (s.u, s.x)
            )
        if self.support == "binary":
            self._splits = as_uint8(self._splits)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(
                f"{self.name} data set: unknown split {name!r}; expected one of {', '.join(SPLITS)}"
            )
        return self._splits[name]


def find_npz(path: Path) -> Path:
    """``path``, or the one .npz file in the folder ``path``."""
    if path.is_dir():
        candidates = sorted(path.glob("*.npz"))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise UserError(
                f"{path}: expected exactly one .npz file in this folder, found "
                f"{len(candidates)} ({found}); pass --data the file to read"
            )
        path = candidates[0]
    if not path.is_file():
        raise UserError(f"{path}: npz file not found")
    return path


def read_npz(path: Path, dataset: str = "npz") -> dict[str, Split]:
    """The three splits of an npz file as float32 arrays, checked, NaN/Inf padding zeroed.

    ``dataset`` prefixes the line printed when padding is zeroed.
    """
    try:
        arrays = np.load(path, allow_pickle=False)
        keys = set(arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: not a readable .npz file ({error})") from error
    needed = {f"{kind}_{split}" for kind in ("u", "x") for split in SPLITS} | {"mask_test"}
    missing = sorted(needed - keys)
    if missing:
        raise UserError(
            f"{path}: missing keys {', '.join(missing)} (has: {', '.join(sorted(keys))})"
        )
    splits = {}
    for name in SPLITS:
        u, x = _read(arrays, path, f"u_{name}", 3), _read(arrays, path, f"x_{name}", 3)
        mask_key = f"mask_{name}"
        mask = (
            _read(arrays, path, mask_key, 2)
            if mask_key in keys
            else np.ones(x.shape[:2], np.float32)
        )
        if u.shape != x.shape or mask.shape != x.shape[:2]:
            raise UserError(
                f"{path}: split {name!r} shapes do not fit: u {u.shape}, x {x.shape}, "
                f"mask {mask.shape}; expected u and x (N, T, D) and mask (N, T)"
            )
        if (
            not np.isfinite(mask).all()
            or not ((mask == 0) | (mask == 1)).all()
            or (mask[:, 1:] > mask[:, :-1]).any()
        ):
            raise UserError(f"{path}: {mask_key} must be 0/1 with the real steps first in each row")
        for key, values in ((f"u_{name}", u), (f"x_{name}", x)):
            _zero_padding(path, key, values, mask, has_mask=mask_key in keys, dataset=dataset)
        splits[name] = Split(u, x, mask)
    return splits


def _read(arrays, path: Path, key: str, ndim: int) -> np.ndarray:
    try:
        array = arrays[key]
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: cannot read {key} ({error})") from error
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UserError(
            f"{path}: {key} has shape {array.shape} and dtype {array.dtype}; expected {ndim} real-valued dimensions"
        )
    # float32 is what models see; values beyond its range become Inf and are caught below
    with np.errstate(over="ignore"):
        return np.array(array, dtype=np.float32)


def _zero_padding(
    path: Path, key: str, values: np.ndarray, mask: np.ndarray, has_mask: bool, dataset: str
) -> None:
    """Zero NaN/Inf on padded steps (in place); refuse them on real steps."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    bad_steps = bad.any(-1)
    real = bad_steps & (mask == 1)
    if real.any():
        row, step = (int(i) for i in np.argwhere(real)[0])
        where = "mask 1" if has_mask else "no mask, so every step is real"
        raise UserError(
            f"{path}: {key} contains NaN or Inf values on a real step (row {row}, step {step}, "
            f"counting from 0; {where}); fix the file, or mark padding with 0 in the split's mask"
        )
    values[bad] = 0.0
    print(
        f"{dataset}: {path}: {key} has NaN/Inf in {int(bad.sum())} values on "
        f"{int(bad_steps.sum())} padded steps (mask 0); treated as padding and zeroed",
        file=sys.stderr,
    )


def infer_support(splits: dict[str, Split]) -> str:
    """binary when every x_* array holds only 0 and 1, else real (categorical is never guessed)."""
    binary = all(((s.x == 0) | (s.x == 1)).all() for s in splits.values())
    return "binary" if binary else "real"


def as_uint8(splits: dict[str, Split]) -> dict[str, Split]:
    """Binary splits stored as uint8: a quarter of the memory, the same float32 batches."""
    return {n: Split(s.u.astype(np.uint8), s.x.astype(np.uint8), s.mask) for n, s in splits.items()}


def check_values(path: Path, splits: dict[str, Split], support: str) -> None:
    """Refuse a declared support that the values contradict: 0/1 for binary; whole class ids
    >= 0 in a last dimension of 1, in x_* and u_* (the inputs are ids too), for categorical."""
    if support == "real":
        return
    expected = "only 0 and 1" if support == "binary" else "whole class ids >= 0"
    for name, split in splits.items():
        arrays = {f"x_{name}": split.x}
        if support == "categorical":
            arrays[f"u_{name}"] = split.u
        for key, values in arrays.items():
            if support == "binary":
                wrong = (values != 0) & (values != 1)
            else:
                if values.shape[-1] != 1:
                    raise UserError(
                        f"{path}: support=categorical, but {key} has {values.shape[-1]} features "
                        "per step; expected one class id per step (a last dimension of 1)"
                    )
                wrong = (values < 0) | (values != np.round(values))
            if wrong.any():
                row, step, feature = (int(i) for i in np.argwhere(wrong)[0])
                raise UserError(
                    f"{path}: support={support}, but {key} holds {values[row, step, feature]:g} "
                    f"(row {row}, step {step}, feature {feature}); expected {expected}; "
                    "set --data-option support=real, or leave support unset to infer it"
                )


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(NpzDataset)
