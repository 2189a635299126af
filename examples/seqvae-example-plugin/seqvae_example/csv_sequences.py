# seqvae_example/csv_sequences.py
"""``csv-sequences``: a folder of CSV files, one real-valued sequence per file.

A file holds one row per time step and one column per feature, no header. Files are split
into train, valid and test by a shuffle with a fixed seed; rows of different lengths are
padded, with a mask that is 1 on the real steps, which come first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqvae import hookimpl
from seqvae.data import Dataset, Split
from seqvae.errors import UserError


@dataclass
class CsvOptions:
    valid_fraction: float = 0.1
    """Share of the files held out for validation (at least one file)."""
    test_fraction: float = 0.1
    """Share of the files held out for the test split (at least one file)."""
    seed: int = 0
    """Seed of the shuffle of files before the split."""

    def validate(self) -> str | None:
        for key in ("valid_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 0.5:
                return f"{key}: expected a fraction in [0, 0.5), got {getattr(self, key)}"
        return None


class CsvSequences(Dataset):
    """Real-valued sequences, one per CSV file: a row per step, a column per feature."""

    name = "csv-sequences"
    Options = CsvOptions
    unit = "nats per step"
    support = "real"
    likelihood = "gaussian"
    expected_files = "a folder of .csv files, one sequence each: a row per step, a column per feature, no header"
    source_hint = "your own recordings; any table with one row per time step will do"

    def __init__(self, path: Path | None, options: CsvOptions | None = None) -> None:
        super().__init__(path, options or CsvOptions())
        files = sorted(self.path.glob("*.csv")) if self.path.is_dir() else []
        if len(files) < 3:
            raise UserError(f"{self.path}: {len(files)} .csv files found, at least 3 needed; "
                            f"expected {self.expected_files}")
        rows = [_read(file) for file in files]
        for file, row in zip(files, rows, strict=True):
            if row.shape[1] != rows[0].shape[1]:
                raise UserError(f"{file}: {row.shape[1]} columns, but {files[0].name} has {rows[0].shape[1]}; "
                                "every file needs the same features")
        order = np.random.default_rng(self.options.seed).permutation(len(files))
        n_valid = max(1, round(self.options.valid_fraction * len(files)))
        n_test = max(1, round(self.options.test_fraction * len(files)))
        if len(files) - n_valid - n_test < 1:
            raise UserError(f"{self.path}: {len(files)} files leave none for training; "
                            "add files or lower the fractions")
        parts = {"test": order[:n_test], "valid": order[n_test : n_test + n_valid], "train": order[n_test + n_valid :]}
        self._splits = {name: _padded([rows[i] for i in index]) for name, index in parts.items()}

    def split(self, name: str) -> Split:
        if name not in self._splits:
            raise UserError(f"{self.name}: unknown split {name!r}; expected train, valid or test")
        return self._splits[name]


def _read(file: Path) -> np.ndarray:
    try:
        values = np.loadtxt(file, delimiter=",", ndmin=2, dtype=np.float32)
    except ValueError as error:
        raise UserError(f"{file}: not a table of numbers ({error})") from None
    if len(values) < 2 or not np.isfinite(values).all():
        raise UserError(f"{file}: expected at least 2 rows of finite numbers")
    return values


def _padded(rows: list[np.ndarray]) -> Split:
    """Sequences (T_i + 1, D) as one split predicting each step from the one before."""
    longest = max(len(r) for r in rows)
    seq = np.zeros((len(rows), longest, rows[0].shape[1]), np.float32)
    mask = np.zeros((len(rows), longest - 1), np.float32)
    for i, r in enumerate(rows):
        seq[i, : len(r)] = r
        mask[i, : len(r) - 1] = 1.0
    return Split.shifted(seq, mask)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(CsvSequences)
