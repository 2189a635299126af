"""Polyphonic music in its standard splits: ``jsb``, ``nottingham``, ``musedata``, ``piano-midi``.

Each reads, from ``--data``, one file (or a folder holding exactly one of them):

- the pickle of Boulanger-Lewandowski et al. (2012), e.g. ``JSB Chorales.pickle`` (any
  ``.pkl`` / ``.pickle`` in its layout): a dict ``train`` / ``valid`` / ``test`` of lists of
  sequences, each a list of time steps, each a tuple of MIDI note numbers 21..108. It was
  written by Python 2 with numpy integer scalars and is read with :mod:`seqvae.safe_pickle`, so
  a pickle that names any other global is refused and nothing in it runs;
- the same data as JSON (``.json``): ``{"train": [[[60, 64], [62]], ...], "valid": ..., ...}``;
- the ``.npz`` distributed with the SRNN code (e.g. ``jsb_raw_batchsize16_seqlen100.npz``), read
  as the ``npz`` data set reads it (the NaN padding of its ``u_test`` is zeroed) and checked to
  hold binary piano rolls of 88 keys.

Protocol: 88 keys (MIDI 21-108), binary piano rolls, the file's own split, Bernoulli output,
NLL in nats per time step. A sequence's first step is its first input and is not predicted
(u = seq[:-1], x = seq[1:]), as in SRNN's npz files; ``--data-option predict_first=true`` instead
predicts it from a zero input (pickle and JSON only). A step with no notes (a rest) is all zeros.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from seqvae_plugins.npz_dataset import as_uint8, infer_support, read_npz

from seqvae import hookimpl, safe_pickle
from seqvae.data import Dataset, Split
from seqvae.errors import UserError

KEYS = 88
LOWEST = 21  # MIDI number of A0, the lowest piano key
SPLITS = ("train", "valid", "test")
PICKLE_SUFFIXES = (".pickle", ".pkl")
SUFFIXES = (*PICKLE_SUFFIXES, ".json", ".npz")
SOURCE = (
    "the pickles of Boulanger-Lewandowski et al. 2012 are at "
    "http://www-etud.iro.umontreal.ca/~boulanni/icml2012; SRNN's npz files come with its code "
    "(github.com/marcofraccaro/srnn, data/); seqvae downloads nothing"
)


@dataclass
class MusicOptions:
    predict_first: bool = False
    """Predict each sequence's first step from a zero input (pickle and JSON only). By default the
    first step is only an input, as in SRNN's npz files, so step counts match theirs."""


def _expected(pickle_name: str, npz_name: str) -> str:
    return (
        f"the Boulanger-Lewandowski pickle {pickle_name!r} (or any .pkl/.pickle in its layout), "
        f"the same data as .json, or SRNN's {npz_name}"
    )


class PolyphonicMusic(Dataset):
    """Base of the music data sets: 88-key binary piano rolls in the file's own split."""

    Options = MusicOptions
    unit = "nats per step"
    support = "binary"
    likelihood = "bernoulli"
    pickle_name: ClassVar[str]
    npz_name: ClassVar[str]

    def __init__(self, path: Path | None, options: MusicOptions | None = None) -> None:
        options = options or MusicOptions()
        super().__init__(path, options)
        if self.path is None:
            raise UserError(f"{self.name}: a data path is required; expected {self.expected_files}")
        if not self.path.exists():
            raise UserError(f"{self.path}: not found; {self.name} expects {self.expected_files}")
        self.path = self._find(self.path)
        if self.path.suffix.lower() == ".npz":
            if options.predict_first:
                raise UserError(
                    f"--data-option predict_first: does not apply to {self.path.name}: an npz file "
                    "holds u and x as stored (its first steps are inputs only); drop the option"
                )
            self._splits = self._read_npz()
            return
        if self.path.suffix.lower() == ".json":
            data = _read_json(self.path)
        else:
            data = safe_pickle.load(self.path, f"{self.name} pickle")
        if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
            found = (
                f"keys {', '.join(map(repr, data))}" if isinstance(data, dict)
                else f"a {type(data).__name__}"
            )  # fmt: skip
            raise UserError(
                f"{self.path}: expected a dict with lists of sequences under 'train', 'valid' and "
                f"'test'; found {found}"
            )
        self._splits = {
            s: self._shifted(s, piano_rolls(self.path, s, data[s]), options.predict_first)
            for s in SPLITS
        }

    @property
    def x_dim(self) -> int:
        return KEYS

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"{self.name}: unknown split {name!r}; expected train, valid or test")
        return self._splits[name]

    def _find(self, path: Path) -> Path:
        """``path``, or the one file of a known kind in the folder ``path``."""
        if path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise UserError(
                    f"{path}: not a file {self.name} reads; expected {self.expected_files}"
                )
            return path
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if len(found) != 1:
            names = ", ".join(p.name for p in found) if found else "none"
            raise UserError(
                f"{path}: expected exactly one data file in this folder ({self.expected_files}); "
                f"found {names}; pass --data the file to read"
            )
        return found[0]

    def _read_npz(self) -> dict[str, Split]:
        splits = read_npz(self.path, self.name)
        dims = splits["train"].x_dim
        if dims != KEYS:
            raise UserError(
                f"{self.path}: x_train has {dims} features per step; {self.name} piano rolls have "
                f"{KEYS} keys (MIDI 21-108)"
            )
        if infer_support(splits) != "binary":
            raise UserError(
                f"{self.path}: the x_* arrays hold values other than 0 and 1; {self.name} expects "
                "binary piano rolls (read other data with --dataset npz)"
            )
        return as_uint8(splits)

    def _shifted(self, split: str, rolls: list[np.ndarray], predict_first: bool) -> Split:
        """u = seq[:-1], x = seq[1:] of the sequences, padded with zeros and masked."""
        first = 1 if predict_first else 0  # a zero input step before each sequence
        kept = [r for r in rolls if len(r) - 1 + first > 0]
        if len(kept) < len(rolls):
            # a sequence with nothing to predict would divide its bound by zero steps
            print(
                f"{self.name}: {self.path}: {len(rolls) - len(kept)} {split} sequences have no step "
                "to predict (one step, or none) and are left out",
                file=sys.stderr,
            )
        lengths = [len(r) - 1 + first for r in kept]
        longest = max(lengths, default=0)
        seq = np.zeros((len(kept), longest + 1, KEYS), dtype=np.uint8)
        mask = np.zeros((len(kept), longest), dtype=np.float32)
        for row, (roll, steps) in enumerate(zip(kept, lengths, strict=True)):
            seq[row, first : first + len(roll)] = roll
            mask[row, :steps] = 1
        # u is a copy so that its padding can be zeroed too: the step after a sequence's end
        # would otherwise hold its last chord, where the npz files hold zeros
        u = seq[:, :-1].copy()
        u[mask == 0] = 0
        return Split(u, seq[:, 1:], mask)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"{path}: not a readable JSON file ({error})") from None


def piano_rolls(path: Path, split: str, sequences: list) -> list[np.ndarray]:
    """(T, 88) uint8 rolls of ``sequences`` (lists of chords of MIDI note numbers)."""
    rolls = []
    for i, sequence in enumerate(sequences):
        where = f"{path}: {split} sequence {i}"
        if not isinstance(sequence, (list, tuple)):
            raise UserError(
                f"{where} is a {type(sequence).__name__}; expected a list of time steps"
            )
        steps, notes = [], []
        for t, chord in enumerate(sequence):
            if not isinstance(chord, (list, tuple)):
                raise UserError(f"{where}, step {t}: {chord!r} is not a list of MIDI note numbers")
            steps += [t] * len(chord)
            notes += chord
        roll = np.zeros((len(sequence), KEYS), dtype=np.uint8)
        if notes:
            keys = _keys(notes, steps, where)
            roll[steps, keys] = 1
        rolls.append(roll)
    return rolls


def _keys(notes: list, steps: list[int], where: str) -> np.ndarray:
    """Piano-key indices 0..87 of ``notes``; an error naming the step of the first bad one."""
    values = np.fromiter(map(_number, notes), dtype=np.float64, count=len(notes))
    with np.errstate(invalid="ignore"):
        good = (values == np.round(values)) & (values >= LOWEST) & (values < LOWEST + KEYS)
    if not good.all():
        k = int(np.argmin(good))
        raise UserError(
            f"{where}, step {steps[k]}: note {notes[k]!r} is not one of the 88 piano keys; "
            "expected whole MIDI note numbers 21-108"
        )
    return values.astype(np.int64) - LOWEST


def _number(note) -> float:
    """``note`` as a float; NaN for anything but a number (a string, a list, a bool)."""
    if isinstance(note, bool) or not isinstance(note, (int, float, np.integer, np.floating)):
        return math.nan
    try:
        return float(note)
    except OverflowError:
        return math.nan


class Jsb(PolyphonicMusic):
    """J. S. Bach chorales (229/76/77), 88-key piano rolls; nats per step."""

    name = "jsb"
    pickle_name = "JSB Chorales.pickle"
    npz_name = "jsb_raw_batchsize16_seqlen100.npz"
    expected_files = _expected(pickle_name, npz_name)
    source_hint = (
        f"{SOURCE}; a quarter-note JSON/pickle of the same split is at "
        "github.com/czhuang/JSB-Chorales-dataset"
    )


class Nottingham(PolyphonicMusic):
    """Nottingham folk tunes, 88-key piano rolls; nats per step."""

    name = "nottingham"
    pickle_name = "Nottingham.pickle"
    npz_name = "nottingham_raw_batchsize16_seqlen100.npz"
    expected_files = _expected(pickle_name, npz_name)
    source_hint = SOURCE


class MuseData(PolyphonicMusic):
    """MuseData classical scores, 88-key piano rolls; nats per step."""

    name = "musedata"
    pickle_name = "MuseData.pickle"
    npz_name = "muse_raw_batchsize16_seqlen100.npz"
    expected_files = _expected(pickle_name, npz_name)
    source_hint = SOURCE


class PianoMidi(PolyphonicMusic):
    """Piano-midi.de classical piano pieces, 88-key piano rolls; nats per step."""

    name = "piano-midi"
    pickle_name = "Piano-midi.de.pickle"
    npz_name = "piano_raw_batchsize16_seqlen100.npz"
    expected_files = _expected(pickle_name, npz_name)
    source_hint = SOURCE


@hookimpl
def seqvae_register(registry) -> None:
    for cls in (Jsb, Nottingham, MuseData, PianoMidi):
        registry.add(cls)
