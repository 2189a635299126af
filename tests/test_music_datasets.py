"""``jsb``, ``nottingham``, ``musedata``, ``piano-midi``: the Boulanger-Lewandowski pickle, its
JSON twin and SRNN's npz read as 88-key piano rolls in the file's own split."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from seqvae_plugins.music_datasets import Jsb, MuseData, MusicOptions, Nottingham, PianoMidi

from seqvae.cli import main, resolve_data_path
from seqvae.errors import UserError
from seqvae.registry import default_registry
from tests.datafiles import write_music_json, write_music_pickle

SPLITS = ("train", "valid", "test")
TINY = {
    "train": [[(60, 64, 67), (62,), ()], [(21, 108), (48,)]],  # a rest; the lowest and highest keys
    "valid": [[(72,), (74,), (76,), (77,)]],
    "test": [[(55,), (55, 59)], [(60,)] * 3],
}
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "jsb"
real_data = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/jsb is absent")


def roll(seq) -> np.ndarray:
    out = np.zeros((len(seq), 88), np.uint8)
    for t, chord in enumerate(seq):
        out[t, [n - 21 for n in chord]] = 1
    return out


def srnn_npz(path: Path, data=TINY) -> Path:
    """SRNN's layout of ``data``: u = seq[:-1], x = seq[1:]; train and valid cut to rows of the
    shortest length, test whole and padded, with NaN in u_test after each sequence's end."""
    arrays = {}
    for split in ("train", "valid"):
        rolls = [roll(s) for s in data[split]]
        steps = min(len(r) for r in rolls)
        arrays[f"u_{split}"] = np.stack([r[: steps - 1] for r in rolls]).astype(np.float32)
        arrays[f"x_{split}"] = np.stack([r[1:steps] for r in rolls]).astype(np.float32)
    rolls = [roll(s) for s in data["test"]]
    longest = max(len(r) for r in rolls) - 1
    u = np.full((len(rolls), longest, 88), np.nan, np.float32)
    x = np.zeros((len(rolls), longest, 88), np.float32)
    mask = np.zeros((len(rolls), longest), np.float32)
    for i, r in enumerate(rolls):
        u[i, : len(r) - 1], x[i, : len(r) - 1], mask[i, : len(r) - 1] = r[:-1], r[1:], 1
    np.savez(path, u_test=u, x_test=x, mask_test=mask, **arrays)
    return path


@pytest.fixture
def tiny_pickle(tmp_path) -> Path:
    return write_music_pickle(tmp_path / "JSB Chorales.pickle", TINY)


@pytest.fixture
def tiny_json(tmp_path) -> Path:
    return write_music_json(tmp_path / "jsb.json", TINY)


def test_the_four_data_sets_are_registered_with_the_music_protocol():
    registry = default_registry()
    for cls in (Jsb, Nottingham, MuseData, PianoMidi):
        entry = registry.get("dataset", cls.name)
        assert entry.cls is cls and entry.provider == "seqvae:music-datasets"
        assert (cls.unit, cls.support, cls.likelihood) == ("nats per step", "binary", "bernoulli")
        assert cls.pickle_name in cls.expected_files and cls.npz_name in cls.expected_files
    assert [c.name for c in (Jsb, Nottingham, MuseData, PianoMidi)] == ["jsb", "nottingham", "musedata", "piano-midi"]


def test_the_pickle_is_read_as_piano_rolls_with_the_first_step_an_input(tiny_pickle):
    data = Jsb(tiny_pickle)
    assert data.x_dim == 88 and [len(data.split(s)) for s in SPLITS] == [2, 1, 2]
    train = data.split("train")
    # each sequence's first step is an input only: 2 + 1 predicted steps
    assert train.x.shape == (2, 2, 88) and train.x.dtype == np.uint8 and train.steps == 3
    np.testing.assert_array_equal(train.mask, [[1, 1], [1, 0]])
    np.testing.assert_array_equal(train.u[0], roll(TINY["train"][0])[:2])
    np.testing.assert_array_equal(train.x[0], roll(TINY["train"][0])[1:])
    assert train.x[0, 1].sum() == 0  # the rest: an all-zero step
    assert train.u[1, 0].nonzero()[0].tolist() == [0, 87] and train.x[1, 0].nonzero()[0].tolist() == [27]
    assert not train.x[1, 1].any() and not train.u[1, 1].any()  # padding
    assert [data.split(s).steps for s in SPLITS] == [3, 3, 3]


def test_predict_first_predicts_the_first_step_from_zeros(tiny_pickle):
    data = Jsb(tiny_pickle, MusicOptions(predict_first=True))
    test = data.split("test")
    assert test.x.shape == (2, 3, 88) and [data.split(s).steps for s in SPLITS] == [5, 4, 5]
    np.testing.assert_array_equal(test.mask, [[1, 1, 0], [1, 1, 1]])
    assert not test.u[:, 0].any()
    np.testing.assert_array_equal(test.x[0, :2], roll(TINY["test"][0]))
    np.testing.assert_array_equal(test.u[1, 1:], roll(TINY["test"][1])[:2])
    assert data.fingerprint != Jsb(tiny_pickle).fingerprint


def test_json_twin_gives_the_same_arrays_and_fingerprint(tiny_pickle, tiny_json):
    from_pickle, from_json = Jsb(tiny_pickle), Jsb(tiny_json)
    for s in SPLITS:
        for field in ("u", "x", "mask"):
            np.testing.assert_array_equal(getattr(from_pickle.split(s), field), getattr(from_json.split(s), field))
    assert len(from_pickle.fingerprint) == 12 and from_pickle.fingerprint == from_json.fingerprint


def test_srnn_npz_is_read_with_its_nan_padding_zeroed(tmp_path, tiny_pickle, capsys):
    path = srnn_npz(tmp_path / "jsb_raw_batchsize16_seqlen100.npz")
    data = Jsb(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"jsb: {path}: u_test has NaN/Inf in 88 values on 1 padded steps (mask 0); treated as padding and zeroed"]
    test, pickled = data.split("test"), Jsb(tiny_pickle).split("test")
    assert test.u.dtype == np.uint8 and test.steps == 3
    for field in ("u", "x", "mask"):  # the test split is the pickle's, whole and padded
        np.testing.assert_array_equal(getattr(test, field), getattr(pickled, field))
    assert data.split("train").x.shape == (2, 1, 88) and data.split("train").steps == 2
    with pytest.raises(UserError, match="--data-option predict_first: does not apply to jsb_raw.*npz"):
        Jsb(path, MusicOptions(predict_first=True))


def test_npz_of_other_sizes_or_values_is_refused(tmp_path):
    arrays = dict(np.load(srnn_npz(tmp_path / "a.npz")))
    np.savez(tmp_path / "wide.npz", **{k: v[..., :80] if k[0] in "ux" else v for k, v in arrays.items()})
    with pytest.raises(UserError, match="wide.npz: x_train has 80 features per step; jsb piano rolls have 88"):
        Jsb(tmp_path / "wide.npz")
    arrays["x_valid"] = arrays["x_valid"] * 0.5
    np.savez(tmp_path / "half.npz", **arrays)
    with pytest.raises(UserError, match="half.npz: the x_\\* arrays hold values other than 0 and 1"):
        Jsb(tmp_path / "half.npz")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"valid": [[(72,), (20,)]]}, "valid sequence 0, step 1: note 20 is not one of the 88 piano keys"),
        ({"test": [[(60,)], [(60,), (64, 109)]]}, "test sequence 1, step 1: note 109 is not one of"),
        ({"train": [[(60,), ("C4",)]]}, "train sequence 0, step 1: note 'C4' is not one of"),
        ({"train": [[(60,), (60.5,)]]}, "train sequence 0, step 1: note 60.5 is not one of"),
        ({"train": [[60, 62]]}, "train sequence 0, step 0: 60 is not a list of MIDI note numbers"),
        ({"train": {"a": 1}}, "expected a dict with lists of sequences under 'train', 'valid' and 'test'"),
    ],
)
def test_bad_notes_are_errors_naming_file_split_sequence_and_step(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**TINY, **change}))
    with pytest.raises(UserError, match=f"bad.json: {message}"):
        Jsb(path)


def test_a_folder_must_hold_exactly_one_data_file(tmp_path, tiny_pickle):
    (tmp_path / "notes.txt").write_text("not data")
    assert Jsb(tmp_path).path == tiny_pickle  # one recognised file; others are ignored
    write_music_json(tmp_path / "jsb.json", TINY)
    with pytest.raises(UserError, match=r"expected exactly one data file .*found JSB Chorales.pickle, jsb.json; pass --data the file"):
        Jsb(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"empty: expected exactly one data file in this folder \(the Boulanger-Lewandowski pickle 'JSB Chorales.pickle'.*found none"):
        Jsb(empty)
    with pytest.raises(UserError, match="notes.txt: not a file jsb reads; expected"):
        Jsb(tmp_path / "notes.txt")


@pytest.mark.parametrize("cls", [Jsb, Nottingham, MuseData, PianoMidi])
def test_not_found_names_the_expected_files_and_their_source(cls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        resolve_data_path(cls.name, None, cls.expected_files, cls.source_hint)
    text = str(error.value)
    assert f"data/{cls.name}" in text and cls.pickle_name in text and cls.npz_name in text
    assert "boulanni/icml2012" in text and "marcofraccaro/srnn" in text and "downloads nothing" in text


class Payload:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call", ["os.system", "builtins.exec"])
def test_a_pickle_that_would_run_code_is_refused_with_exit_2(tmp_path, capsys, call):
    marker = tmp_path / "marker"
    payload = (
        Payload(os.system, f"touch {marker}") if call == "os.system"
        else Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")
    )  # fmt: skip
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": [payload], "valid": [], "test": []}))
    refused = f"{payload.call.__module__}.{payload.call.__name__}"  # os.system is posix.system
    with pytest.raises(UserError, match=f"evil.pkl: refused to load this jsb pickle: it names the global {refused}"):
        Jsb(evil)
    args = ["train", "--model", "rnn", "--dataset", "jsb", "--data", str(evil), "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert f"refused to load this jsb pickle: it names the global {refused}" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_an_rnn_trains_on_the_tiny_pickle(tmp_path, tiny_pickle, capsys):
    sets = ["model.decoder.embed=6", "model.decoder.hidden=8", "train.batch_size=2", "train.eval_every=0"]
    args = ["train", "--model", "rnn", "--dataset", "jsb", "--data", str(tiny_pickle), "--max-steps", "2",
            "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err


@real_data
def test_the_real_quarter_note_pickle_and_json_hold_the_standard_split():
    started = time.perf_counter()
    pickled = Jsb(REAL / "jsb-chorales-quarter.pkl")
    from_json = Jsb(REAL / "jsb-chorales-quarter.json")
    assert [len(pickled.split(s)) for s in SPLITS] == [229, 76, 77]
    test = pickled.split("test")
    assert test.steps == 4648 and test.x.shape == (77, 159, 88)  # longest test sequence: 160 steps
    assert pickled.fingerprint == from_json.fingerprint
    assert time.perf_counter() - started < 10  # about 0.2 s; generous on a loaded machine


@real_data
def test_the_real_srnn_npz_holds_twice_the_steps():
    data = Jsb(REAL / "jsb_raw_batchsize16_seqlen100.npz")
    assert data.split("train").x.shape == (272, 100, 88)
    test = data.split("test")
    assert len(test) == 77 and test.steps == 9396 and np.isfinite(test.u).all()
    assert data.fingerprint != Jsb(REAL / "jsb-chorales-quarter.json").fingerprint
