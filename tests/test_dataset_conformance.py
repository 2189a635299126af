"""The data-set conformance suite (seqvae.testing.datasets) on every registered data set, each
on a miniature corpus written here, and on deliberately broken data sets that must fail it by
name."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from seqvae.data import Dataset, Split
from seqvae.errors import UserError
from seqvae.registry import build_registry, default_registry
from seqvae.testing import conformance
from seqvae.testing.data import write_demo_npz
from tests.datafiles import sphere_bytes, write_amat, write_ldc_tree, write_music_pickle
from tests.fake_plugins import plugin_module

MUSIC = {
    "train": [[(60, 64, 67), (62,), ()], [(21, 108), (48,)]],
    "valid": [[(72,), (74,), (76,), (77,)]],
    "test": [[(55,), (55, 59)], [(60,)] * 3],
}


def _audio(folder: Path, files: int = 12, low: int = 9000) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(files):
        samples = (rng.standard_normal(int(rng.integers(low, low + 4000))) * 3000).astype(np.int16)
        (folder / f"u{i:02d}.sph").write_bytes(sphere_bytes(samples))
    return folder


def _mnist(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        write_amat(folder / f"binarized_mnist_{split}.amat", (rng.random((n, 784)) < 0.3).astype(np.uint8))
    return folder


def _text(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    words = [f"w{i:02d}" for i in range(30)]
    folder.mkdir()
    lines = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(5, 17, size=120)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    return folder


def _imdb(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    words = [f"w{i:02d}" for i in range(30)]
    for i in range(60):
        part = "train/pos" if i < 40 else "test/neg"
        text = ". ".join(" ".join(rng.choice(words, size=int(n))) for n in rng.integers(5, 12, size=3)) + "."
        path = folder / "aclImdb" / part / f"{i}_7.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def _chorales(folder: Path, monkeypatch) -> None:
    pytest.importorskip("music21")
    from seqvae_plugins import chorales_dataset

    folder.mkdir()
    for name in ["bwv1.6.mxl", "bwv10.7.mxl", "bwv101.7.mxl", "bwv102.7.mxl", "bwv103.6.mxl"]:
        shutil.copy(chorales_dataset.music21_bach_folder() / name, folder / name)
    monkeypatch.setattr(chorales_dataset, "music21_bach_folder", lambda: folder)
    return None  # embedded: read with no path


WRITERS = {
    "npz": lambda tmp, mp: write_demo_npz(tmp / "toy.npz", dims=3, steps=12),
    "timit": lambda tmp, mp: write_ldc_tree(tmp / "timit", train=(2, 4, 7), test=(1, 1, 2)) and tmp / "timit",
    "audio-dir": lambda tmp, mp: _audio(tmp / "audio"),
    "blizzard": lambda tmp, mp: _audio(tmp / "blizzard", files=24, low=17000),
    "seqmnist": lambda tmp, mp: _mnist(tmp / "mnist"),
    "seqmnist-pixel": lambda tmp, mp: _mnist(tmp / "mnist"),
    "text": lambda tmp, mp: _text(tmp / "text"),
    "imdb": lambda tmp, mp: _imdb(tmp / "imdb"),
    "chorales": lambda tmp, mp: _chorales(tmp / "bach", mp),
    **{name: (lambda tmp, mp: write_music_pickle(tmp / "music.pickle", MUSIC))
       for name in ("jsb", "nottingham", "musedata", "piano-midi")},
}  # fmt: skip


def test_every_registered_data_set_has_a_miniature_corpus_here():
    assert {entry.name for entry in default_registry().entries("dataset")} <= set(WRITERS)


@pytest.mark.filterwarnings("ignore:.*the full TIMIT corpus has")
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_builtin_data_set_conforms(name, tmp_path, monkeypatch):
    if default_registry().find("dataset", name) is None:
        pytest.skip(f"{name} is not registered here")
    path = WRITERS[name](tmp_path, monkeypatch)
    report = conformance.check_dataset(name, path)
    assert report.passed == [prop.name for prop in conformance.DATASET_CHECKS]


REAL_JSB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "jsb"


@pytest.mark.skipif(not REAL_JSB.is_dir(), reason="../shared/data/jsb is absent")
@pytest.mark.parametrize("file", ["jsb-chorales-quarter.pkl", "jsb-chorales-quarter.json", "jsb_raw_batchsize16_seqlen100.npz"])
def test_the_real_jsb_files_conform(file):
    assert conformance.check_dataset("jsb", REAL_JSB / file).passed


# ---------------------------------------------------------------------------- broken data sets


@dataclass
class _Options:
    pass


class GoodData(Dataset):
    """Three rows of two real features, of lengths 4, 2 and 1."""

    name = "good-data"
    Options = _Options
    expected_files = "good.txt"
    source_hint = "written by the test"
    lengths = (4, 2, 1)

    def __init__(self, path, options=None) -> None:
        super().__init__(path, options)
        if not (self.path / "good.txt").is_file():
            raise UserError(f"{self.path}: no good.txt here")

    def mask(self) -> np.ndarray:
        return (np.arange(4)[None] < np.array(self.lengths)[:, None]).astype(np.float32)

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise UserError(f"unknown split {name!r}")
        seq = np.linspace(-1, 1, 3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
        return Split.shifted(seq, self.mask())


class NotPrefix(GoodData):
    name = "not-prefix"

    def mask(self) -> np.ndarray:
        mask = super().mask()
        mask[1, 1], mask[1, 2] = 0.0, 1.0  # 1, 0, 1, 0: a hole before a real step
        return mask


class WrongUnit(GoodData):
    name = "wrong-unit"
    unit = "nats"


class WrongSupport(GoodData):
    name = "wrong-support"
    support = "binary"
    likelihood = "bernoulli"


class CrashesWhenMissing(GoodData):
    name = "crashes-when-missing"

    def __init__(self, path, options=None) -> None:
        Dataset.__init__(self, path, options)
        (self.path / "good.txt").read_text()  # FileNotFoundError, not a UserError


@pytest.fixture(scope="module")
def broken_registry():
    classes = (GoodData, NotPrefix, WrongUnit, WrongSupport, CrashesWhenMissing)
    return build_registry(extra=[plugin_module("broken_datasets", *classes)])


@pytest.mark.parametrize(("name", "prop", "says"), [
    ("not-prefix", "masks", "the mask of row 1 is not a prefix"),
    ("wrong-unit", "declarations", "has unit 'nats'"),
    ("wrong-support", "support", "support is binary, but x holds"),
    ("crashes-when-missing", "not-found", "raises FileNotFoundError"),
])  # fmt: skip
def test_a_broken_data_set_fails_by_name(name, prop, says, broken_registry, tmp_path):
    (tmp_path / "good.txt").write_text("")
    with pytest.raises(conformance.ConformanceError) as failed:
        conformance.check_dataset(name, tmp_path, registry=broken_registry)
    assert failed.value.label == f"dataset {name!r} (plugin 'broken_datasets')"
    assert list(failed.value.failures) == [prop] and says in failed.value.failures[prop]


def test_the_good_twin_of_the_broken_ones_conforms(broken_registry, tmp_path):
    (tmp_path / "good.txt").write_text("")
    assert conformance.check_dataset("good-data", tmp_path, registry=broken_registry).passed
