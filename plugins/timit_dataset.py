"""The ``timit`` data set: TIMIT speech (LDC93S1) read the way the published tables read it.

Two sources, found in the data folder (or given directly with ``--data``):

- the LDC layout, ``TRAIN/`` and ``TEST/`` with ``DR*/<speaker>/*.WAV`` NIST SPHERE files (any
  case of names; a folder up to two levels above them will do). The protocol: 16 kHz audio;
  the 4620 TRAIN utterances (SA sentences included) shuffled with a fixed seed, 5 % (231) held
  out for validation; one global scalar mean and std of the remaining training audio; frames of
  200 samples; the training and validation audio each concatenated and cut into 40-frame rows
  (0.5 s); all 1680 TEST utterances whole, zero-padded, masked, frames 2..L predicted.
- the preprocessed ``timit_raw_batchsize64_seqlen40.npz`` many researchers hold (read as the
  ``npz`` data set reads it, checked for 200 features per step).

Preparation from the raw corpus runs once and is cached (see :mod:`seqvae.cache`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from seqvae_plugins._audio import AudioDataset, Protocol, prepare_audio
from seqvae_plugins.npz_dataset import NpzDataset

from seqvae import hookimpl
from seqvae.cache import cached, fingerprint
from seqvae.data import Split
from seqvae.errors import UserError
from seqvae.slots import NoOptions

PROTOCOL_VERSION = 1
"""Bump when the preparation changes: caches of older versions are then not used."""
NPZ_NAME = "timit_raw_batchsize64_seqlen40.npz"
FULL_TRAIN, FULL_TEST = 4620, 1680
VALID_FRACTION = 0.05
SEED = 1234
PROTOCOL = Protocol(rate=16000, frame=200, seq_frames=40)
UTTERANCE = re.compile(r"^[A-Za-z0-9_]+\.wav$", re.IGNORECASE)
"""SA1.WAV, sx53.wav; not the SA1.WAV.wav RIFF copies some redistributions add."""


@dataclass
class TimitOptions:
    source: Literal["auto", "raw", "npz"] = "auto"
    """Which source to read when a folder holds both (auto: the npz file)."""


class Timit(AudioDataset):
    """TIMIT (LDC93S1) speech: 200-sample frames at 16 kHz, 40-frame training rows."""

    name = "timit"
    Options = TimitOptions
    expected_files = (
        "the LDC layout TRAIN/DR*/<speaker>/*.WAV and TEST/DR*/<speaker>/*.WAV (NIST SPHERE, "
        f"upper or lower case), or the preprocessed {NPZ_NAME}"
    )
    source_hint = (
        "TIMIT is licensed from the Linguistic Data Consortium as LDC93S1 "
        "(https://catalog.ldc.upenn.edu/LDC93S1); seqvae does not download it"
    )

    def __init__(self, path: Path | None, options: TimitOptions | None = None) -> None:
        options = options or TimitOptions()
        super().__init__(path, options)
        if self.path is None:
            raise UserError("timit: a data path is required")
        self._npz: NpzDataset | None = None
        npz = _find_npz(self.path) if options.source != "raw" else None
        if npz is not None:
            self._npz = NpzDataset(npz, NoOptions())
            self.path = npz
            return
        root = _find_ldc_root(self.path) if options.source != "npz" else None
        if root is None:
            raise UserError(
                f"{self.path}: no TIMIT corpus here; expected {self.expected_files}. "
                f"{self.source_hint}"
            )
        self.path = root
        self._prepare(root)

    def _prepare(self, root: Path) -> None:
        train = _utterances(root, "train")
        test = _utterances(root, "test")
        for split, files, full in (("TRAIN", train, FULL_TRAIN), ("TEST", test, FULL_TEST)):
            if len(files) != full:
                warnings.warn(
                    f"{root}: found {len(files)} {split} utterances; the full TIMIT corpus has "
                    f"{full}, so numbers will not be comparable with the published tables",
                    stacklevel=3,
                )
        if not train or not test:
            raise UserError(f"{root}: no .WAV utterances under TRAIN/ or TEST/")
        splits = timit_splits(train, test)
        key = {
            "dataset": self.name, "protocol": PROTOCOL_VERSION, "root": str(root.resolve()),
            "source": fingerprint([*train, *test], root), "seed": SEED,
        }  # fmt: skip
        folder, info = cached(
            self.name, key,
            lambda out: prepare_audio(
                out, splits, {"train": "rows", "valid": "rows", "test": "whole"}, PROTOCOL,
                desc=f"timit ({len(train)} + {len(test)} utterances)",
            ),
        )  # fmt: skip
        self._open_cache(folder, info)

    @property
    def x_dim(self) -> int:
        return PROTOCOL.frame

    def split(self, name: str) -> Split:
        if self._npz is None:
            return super().split(name)
        split = self._npz.split(name)
        if split.x_dim != PROTOCOL.frame:
            raise UserError(
                f"{self.path}: x_{name} has {split.x_dim} features per step; TIMIT frames have "
                f"{PROTOCOL.frame} samples"
            )
        return split


def timit_splits(train: list[Path], test: list[Path]) -> dict[str, list[Path]]:
    """The protocol's splits: 5 % of TRAIN (fixed seed) for validation, TEST whole."""
    n_valid = round(VALID_FRACTION * len(train))
    held = set(np.random.default_rng(SEED).permutation(len(train))[:n_valid].tolist())
    return {
        "train": [f for i, f in enumerate(train) if i not in held],
        "valid": [f for i, f in enumerate(train) if i in held],
        "test": list(test),
    }


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder ``name`` of ``folder`` in any case."""
    try:
        return next(p for p in folder.iterdir() if p.is_dir() and p.name.lower() == name)
    except (StopIteration, OSError):
        return None


def _find_ldc_root(path: Path) -> Path | None:
    """The folder holding TRAIN/ and TEST/: ``path`` or a folder up to two levels below."""
    if not path.is_dir():
        return None
    levels = [[path]]
    for _ in range(2):
        levels.append([c for p in levels[-1] for c in sorted(p.iterdir()) if c.is_dir()])
    for level in levels:
        for folder in level:
            if _child(folder, "train") and _child(folder, "test"):
                return folder
    return None


def _find_npz(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".npz" else None
    found = path / NPZ_NAME
    return found if found.is_file() else None


def _utterances(root: Path, split: str) -> list[Path]:
    folder = _child(root, split)
    if folder is None:
        return []
    files = [p for p in folder.rglob("*") if UTTERANCE.match(p.name) and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix().lower())


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(Timit)
