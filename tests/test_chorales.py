"""``chorales``: Bach chorales from music21's corpus as 88-key piano rolls, one step per quarter."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from seqvae_plugins import chorales_dataset
from seqvae_plugins.chorales_dataset import Chorales, piano_roll, score_files, split_pieces

from seqvae.cli import main
from seqvae.errors import UserError
from seqvae.registry import default_registry
from tests.datafiles import write_music_pickle

music21 = pytest.importorskip("music21")

FEW = ["bwv1.6.mxl", "bwv10.7.mxl", "bwv101.7.mxl", "bwv102.7.mxl", "bwv103.6.mxl"]


@pytest.fixture
def few_chorales(tmp_path, monkeypatch):
    """Five of the bundled chorales, standing in for the whole embedded corpus."""
    folder = tmp_path / "bach"
    folder.mkdir()
    for name in FEW:
        shutil.copy(chorales_dataset.music21_bach_folder() / name, folder / name)
    monkeypatch.setattr(chorales_dataset, "music21_bach_folder", lambda: folder)
    return folder


def test_piano_roll_samples_the_sounding_keys_at_each_quarter_note():
    from music21 import chord, note, stream

    part = stream.Part()
    part.insert(0, note.Note("C4", quarterLength=1))  # MIDI 60: key 39
    part.insert(1, note.Note("E4", quarterLength=2))  # steps 1, 2
    part.insert(3, chord.Chord(["A0", "C8"], quarterLength=1))  # the lowest and highest keys
    part.insert(4.5, note.Note("G4", quarterLength=0.5))  # between two quarter offsets: no step
    part.insert(3.5, note.Note("D4", quarterLength=1))  # sounds at offset 4
    roll = piano_roll(stream.Score([part]))
    assert roll.shape == (5, 88) and roll.dtype == np.uint8
    expected = np.zeros((5, 88), np.uint8)
    expected[0, 39] = expected[1, 43] = expected[2, 43] = expected[3, 0] = expected[
        3, 87
    ] = expected[4, 41] = 1
    np.testing.assert_array_equal(roll, expected)
    low = stream.Score([stream.Part([note.Note("G0")])])
    with pytest.raises(UserError, match="MIDI note 19 is outside the 88 piano keys"):
        piano_roll(low)


def test_bundled_corpus_is_split_60_20_20_by_piece():
    files = score_files(chorales_dataset.music21_bach_folder())
    # 413 scores less three chorales bundled both as Humdrum and MusicXML; no analyses
    assert len(files) == 410 and all(f.suffix in (".mxl", ".xml", ".krn") for f in files)
    assignment = split_pieces(len(files), chorales_dataset.SEED)
    assert [assignment.count(s) for s in ("train", "valid", "test")] == [246, 82, 82]
    assert assignment == split_pieces(len(files), chorales_dataset.SEED)


def test_embedded_chorales_need_no_path(few_chorales):
    dataset = Chorales(None)
    assert dataset.path is None and dataset.x_dim == 88 and dataset.unit == "nats per step"
    sizes = {s: len(dataset.split(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 3, "valid": 1, "test": 1}
    lengths = {p["name"]: p["steps"] for p in dataset.pieces}
    score = music21.converter.parse(few_chorales / "bwv1.6.mxl")
    assert lengths["bwv1.6"] == int(np.ceil(float(score.highestTime))) == 80
    for split in ("train", "valid", "test"):
        data = dataset.split(split)
        x, u, mask = np.asarray(data.x), np.asarray(data.u), np.asarray(data.mask)
        assert set(np.unique(x)) <= {0, 1} and not u[:, 0].any()
        np.testing.assert_array_equal(u[:, 1:], x[:, :-1])
        names = [p["name"] for p in dataset.pieces if p["split"] == split]
        np.testing.assert_array_equal(mask.sum(1), [lengths[n] for n in names])
        assert data.steps == sum(lengths[n] for n in names)
    # four voices: mostly four keys down at a step (fewer where voices share a key)
    keys = np.asarray(dataset.split("train").x).sum(-1)[
        np.asarray(dataset.split("train").mask) == 1
    ]
    assert np.median(keys) == 4 and keys.max() <= 5


def test_jsb_pickle_keeps_its_own_split(tmp_path):
    data = {
        "train": [[(60, 64, 67), (62,)], [(48.0, 72.0)]],
        "valid": [[(), (21, 108)]],
        "test": [[(55,)] * 3],
    }
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    dataset = Chorales(path)
    assert [len(dataset.split(s)) for s in ("train", "valid", "test")] == [2, 1, 1]
    valid = np.asarray(dataset.split("valid").x)[0]
    assert not valid[0].any() and valid[1, 0] == valid[1, 87] == 1 and valid.sum() == 2
    assert np.asarray(dataset.split("train").x)[0, 0].nonzero()[0].tolist() == [39, 43, 46]


def test_the_classic_pickle_with_numpy_scalars_loads(tmp_path):
    data = {"train": [[(60, 64), ()]], "valid": [[(21,)]], "test": [[(108,), (55, 59)]]}
    dataset = Chorales(write_music_pickle(tmp_path / "JSB Chorales.pickle", data))
    test = np.asarray(dataset.split("test").x)[0]
    assert test[0].nonzero()[0].tolist() == [87] and test[1].nonzero()[0].tolist() == [34, 38]


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": [shutil.rmtree]}))
    with pytest.raises(
        UserError,
        match="evil.pickle: refused to load this JSB Chorales pickle: it names the global shutil.rmtree",
    ):
        Chorales(path)


def test_unreadable_score_is_an_error_naming_it(tmp_path):
    (tmp_path / "broken.mxl").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="broken.mxl: not a score music21 can read"):
        Chorales(tmp_path)


def test_gaussian_likelihood_is_refused_with_the_fix(few_chorales, tmp_path, capsys):
    dataset = Chorales(None)
    gaussian = default_registry().get("likelihood", "gaussian").cls
    with pytest.raises(UserError, match="--set model.likelihood.component=bernoulli"):
        dataset.check_model(gaussian)
    # a Gaussian the user chose (the composition's own is swapped for the data's Bernoulli)
    args = ["train", "--model", "zforcing", "--dataset", "chorales", "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "model.likelihood.component=gaussian"]) == 2
    assert "holds binary values" in capsys.readouterr().err


def test_demo_settings_train_on_the_embedded_chorales(few_chorales, tmp_path, capsys):
    from seqvae.bench import preset_overrides
    from tests.conftest import TINY

    preset = preset_overrides(None, "chorales", "zforcing")
    sets = [a for s in [*preset, *TINY, "model.aux.reconstruction.hidden=6"] for a in ("--set", s)]
    status = main(["train", "--model", "zforcing", "--dataset", "chorales", "--max-steps", "2",
                   "--out", str(tmp_path / "run"), *sets])  # fmt: skip
    assert status == 0, capsys.readouterr().err
