"""The ``chorales`` data set, the embedded default: Bach chorales as 88-key piano rolls.

Without a data path it reads the Bach chorales bundled in the music21 package (optional
dependency: ``pip install 'seqvae[music]'``; no network): every score under music21's
``corpus/bach`` (``.mxl``, ``.xml``, ``.krn``; one file per chorale, MusicXML preferred when a
chorale is there twice). A data path may instead name

- a folder of scores music21 can read (MusicXML, MIDI, Humdrum, ABC), or
- the classic ``JSB Chorales.pickle`` of Boulanger-Lewandowski et al. (2012) with its
  standard 229 / 76 / 77 split, so that numbers compare with the published tables.

Protocol: one step per quarter note (step t holds the keys sounding at quarter-note offset t),
88 keys (MIDI 21-108), binary; pieces split by a fixed-seed shuffle of their sorted names, about
60 / 20 / 20 %; the first step is predicted from zeros. Bernoulli output; NLL per time step.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from seqvae import hookimpl, safe_pickle
from seqvae.cache import cached, fingerprint
from seqvae.data import Dataset, Split
from seqvae.errors import UserError

PROTOCOL_VERSION = 1
KEYS = 88
LOWEST = 21  # MIDI number of A0, the lowest piano key
SEED = 1234
FRACTIONS = (0.6, 0.2)
SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".mid", ".midi", ".abc")
PICKLE_SUFFIXES = (".pickle", ".pkl")
SPLITS = ("train", "valid", "test")


@dataclass
class ChoralesOptions:
    seed: int = SEED
    """Seed of the split of pieces (not used for a pickle, which carries its own split)."""


class Chorales(Dataset):
    """Bach chorales (music21's corpus): 88-key binary piano rolls, one step per quarter note."""

    name = "chorales"
    Options = ChoralesOptions
    unit = "nats per step"
    support = "binary"
    likelihood = "bernoulli"
    embedded = True
    expected_files = (
        "nothing (the chorales bundled with music21 are used), or a folder of MusicXML/MIDI "
        "scores, or the JSB Chorales.pickle file"
    )
    source_hint = "the embedded chorales need the music21 package: pip install 'seqvae[music]'"

    def __init__(self, path: Path | None, options: ChoralesOptions | None = None) -> None:
        options = options or ChoralesOptions()
        super().__init__(path, options)
        if self.path is not None and self.path.suffix.lower() in PICKLE_SUFFIXES:
            files, root, source = [self.path], self.path.parent, "pickle"
            build = self._build_pickle
        else:
            if self.path is None:
                root, source = music21_bach_folder(), f"music21 {_music21_version()}"
            else:
                if not self.path.is_dir():
                    raise UserError(f"{self.path}: expected {self.expected_files}")
                root, source = self.path, "scores"
            files = score_files(root)
            if not files:
                raise UserError(f"{root}: no scores; expected {self.expected_files}")
            build = self._build_scores
        key = {
            "dataset": self.name, "protocol": PROTOCOL_VERSION, "source": source,
            "root": str(root.resolve()), "files": fingerprint(files, root), "seed": options.seed,
        }  # fmt: skip
        self._folder, self._info = cached(self.name, key, lambda out: build(out, files))
        self.pieces: list[dict] = self._info["pieces"]
        self._splits: dict[str, Split] = {}

    @property
    def x_dim(self) -> int:
        return KEYS

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"{self.name}: unknown split {name!r}; expected train, valid or test")
        if name not in self._splits:
            rolls = np.load(self._folder / "rolls.npy")  # (all steps, 88) uint8
            offsets = np.concatenate([[0], np.cumsum([p["steps"] for p in self.pieces])])
            chosen = [i for i, p in enumerate(self.pieces) if p["split"] == name]
            longest = max((self.pieces[i]["steps"] for i in chosen), default=0)
            seq = np.zeros((len(chosen), longest + 1, KEYS), dtype=np.uint8)
            mask = np.zeros((len(chosen), longest), dtype=np.float32)
            for row, i in enumerate(chosen):
                steps = self.pieces[i]["steps"]
                seq[row, 1 : steps + 1] = rolls[offsets[i] : offsets[i] + steps]
                mask[row, :steps] = 1
            self._splits[name] = Split.shifted(seq, mask)
        return self._splits[name]

    # ----------------------------------------------------------------------- building

    def _build_scores(self, out: Path, files: list[Path]) -> dict:
        rolls = []
        for path in tqdm(files, desc="preparing chorales", unit="piece", disable=None):
            rolls.append(piano_roll(parse_score(path), path))
        names = [p.stem for p in files]
        assignment = split_pieces(len(files), self.options.seed)
        return _save(out, names, rolls, assignment)

    def _build_pickle(self, out: Path, files: list[Path]) -> dict:
        data = load_jsb_pickle(files[0])
        names, rolls, assignment = [], [], []
        for split in SPLITS:
            for i, piece in enumerate(data[split]):
                roll = np.zeros((len(piece), KEYS), dtype=np.uint8)
                for t, chord in enumerate(piece):
                    for note in chord:
                        roll[t, _key(int(note), files[0])] = 1
                names.append(f"{split}-{i:03d}")
                rolls.append(roll)
                assignment.append(split)
        return _save(out, names, rolls, assignment)


def _save(out: Path, names: list[str], rolls: list[np.ndarray], assignment: list[str]) -> dict:
    np.save(out / "rolls.npy", np.concatenate(rolls) if rolls else np.zeros((0, KEYS), np.uint8))
    pieces = [
        {"name": n, "steps": len(r), "split": s}
        for n, r, s in zip(names, rolls, assignment, strict=True)
    ]  # fmt: skip
    (out / "pieces.json").write_text(json.dumps(pieces))
    return {"pieces": pieces, "sizes": {s: assignment.count(s) for s in SPLITS}}


def split_pieces(n: int, seed: int) -> list[str]:
    """The split of each of ``n`` pieces (in sorted order): a fixed-seed ~60 / 20 / 20 % cut."""
    n_train, n_valid = round(FRACTIONS[0] * n), round(FRACTIONS[1] * n)
    assignment = [""] * n
    for rank, i in enumerate(np.random.default_rng(seed).permutation(n)):
        assignment[i] = (
            "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
        )
    return assignment


def piano_roll(score, source: Path | str = "<score>") -> np.ndarray:
    """(T, 88) uint8: step t holds the keys sounding at quarter-note offset t of ``score``."""
    steps = math.ceil(float(score.highestTime))
    roll = np.zeros((steps, KEYS), dtype=np.uint8)
    for note in score.flatten().notes:
        start = float(note.offset)
        stop = start + float(note.quarterLength)
        first, last = math.ceil(start), math.ceil(stop)  # steps first .. last - 1
        if stop <= start or first >= last:
            continue  # grace notes, and notes between two quarter-note offsets
        for pitch in note.pitches:
            roll[first:last, _key(pitch.midi, source)] = 1
    return roll


def _key(midi: int, source: Path | str) -> int:
    if not LOWEST <= midi < LOWEST + KEYS:
        raise UserError(f"{source}: MIDI note {midi} is outside the 88 piano keys (21-108)")
    return midi - LOWEST


def parse_score(path: Path):
    music21 = _music21()
    try:
        return music21.converter.parse(str(path), forceSource=True)
    except Exception as error:  # music21 raises many kinds on a bad file
        raise UserError(
            f"{path}: not a score music21 can read ({type(error).__name__}: {error})"
        ) from None


def score_files(root: Path) -> list[Path]:
    """Scores under ``root``, one per name (MusicXML first), sorted; analyses left out."""
    best: dict[str, Path] = {}
    rank = {suffix: i for i, suffix in enumerate(SCORE_SUFFIXES)}
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in rank or not path.is_file() or "analyses" in path.parent.name.lower():
            continue
        stem = path.relative_to(root).with_suffix("").as_posix()
        if stem not in best or rank[suffix] < rank[best[stem].suffix.lower()]:
            best[stem] = path
    return [best[stem] for stem in sorted(best)]


def music21_bach_folder() -> Path:
    """music21's bundled Bach corpus, found without importing music21 (which is slow)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded chorales need the music21 package: pip install 'seqvae[music]' "
            "(or pass --data with a folder of scores)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "corpus" / "bach"
    if not folder.is_dir():
        raise UserError(f"{folder}: this music21 installation has no bundled Bach corpus")
    return folder


def _music21_version() -> str:
    try:
        return importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _music21():
    try:
        import music21
    except ImportError:
        raise UserError(
            "reading scores needs the music21 package: pip install 'seqvae[music]'"
        ) from None
    return music21


def load_jsb_pickle(path: Path) -> dict[str, list]:
    """The {train, valid, test} lists of pieces (lists of chords of MIDI numbers), read with
    seqvae's safe unpickler: numpy scalars load (the classic file holds them), code never runs."""
    data = safe_pickle.load(path, "JSB Chorales pickle")
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
        raise UserError(f"{path}: expected a dict with lists under 'train', 'valid' and 'test'")
    return data


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(Chorales)
