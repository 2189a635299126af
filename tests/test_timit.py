"""The TIMIT protocol on a miniature LDC tree of SPHERE files written by the test."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from seqvae_plugins import _audio
from seqvae_plugins.timit_dataset import NPZ_NAME, Timit, TimitOptions

from seqvae.cli import main
from seqvae.errors import UserError
from tests.datafiles import sphere_bytes, write_ldc_tree

FRAME, ROWS = 200, 40


def open_timit(path, **options) -> Timit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the miniature corpus is not the full 4620 + 1680
        return Timit(path, TimitOptions(**options))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "timit"
    return root, write_ldc_tree(root)


def expected_numbers(written, dataset: Timit):
    """The protocol recomputed from the written samples, independently of the preparation."""
    train_names = sorted(written["train"], key=str.lower)
    valid_files = {p.relative_to(dataset.path).as_posix() for p in _held_out(dataset)}
    train = [written["train"][n] / 32768.0 for n in train_names if n not in valid_files]
    audio = np.concatenate(train)
    return audio, valid_files


def _held_out(dataset: Timit):
    from seqvae_plugins.timit_dataset import _utterances, timit_splits

    return timit_splits(_utterances(dataset.path, "train"), _utterances(dataset.path, "test"))[
        "valid"
    ]


def test_raw_corpus_follows_the_protocol(corpus):
    root, written = corpus
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        timit = Timit(root, TimitOptions())
    said = " ".join(str(w.message) for w in caught)
    assert "found 20 TRAIN utterances; the full TIMIT corpus has 4620" in said
    assert "found 6 TEST utterances; the full TIMIT corpus has 1680" in said
    train, valid, test = (timit.split(s) for s in ("train", "valid", "test"))
    audio, valid_files = expected_numbers(written, timit)
    # 5 % of the 20 TRAIN utterances held out with the fixed seed
    assert len(valid_files) == 1 and all(f.startswith("TRAIN/") for f in valid_files)
    # one global scalar mean / std of the training audio
    assert timit.mean == pytest.approx(audio.mean(), rel=1e-9)
    assert timit.std == pytest.approx(audio.std(), rel=1e-9)
    # training audio concatenated into 200-sample frames and 40-frame rows, u_t = x_{t-1}
    frames = len(audio) // FRAME
    assert len(train) == (frames - 1) // ROWS and train.x.shape[1:] == (ROWS, FRAME)
    normalised = ((audio[: frames * FRAME] - audio.mean()) / audio.std()).reshape(frames, FRAME)
    np.testing.assert_allclose(train.u[0], normalised[:ROWS], atol=1e-5)
    np.testing.assert_allclose(
        train.x[-1], normalised[len(train) * ROWS - ROWS + 1 : len(train) * ROWS + 1], atol=1e-5
    )
    np.testing.assert_array_equal(train.x[0, :-1], train.u[0, 1:])
    np.testing.assert_array_equal(train.x[0, -1], train.u[1, 0])
    assert train.steps == len(train) * ROWS and timit.x_dim == FRAME == train.x_dim
    # the held-out utterance is framed the same way, with the training statistics
    held = written["train"][next(iter(valid_files))] / 32768.0
    assert len(valid) == (len(held) // FRAME - 1) // ROWS
    # all 6 TEST utterances whole: frames 2..L predicted, padding masked and zero
    assert len(test) == 6
    names = sorted(written["test"], key=str.lower)
    lengths = [len(written["test"][n]) // FRAME for n in names]
    assert test.x.shape[1] == max(lengths) - 1
    np.testing.assert_array_equal(np.asarray(test.mask).sum(1), [n - 1 for n in lengths])
    assert test.steps == sum(lengths) - len(lengths)
    first = written["test"][names[0]][: lengths[0] * FRAME] / 32768.0
    np.testing.assert_allclose(
        test.x[0, : lengths[0] - 1].reshape(-1),
        ((first - audio.mean()) / audio.std())[FRAME:],
        atol=1e-5,
    )
    shortest = int(np.argmin(lengths))
    assert not np.asarray(test.x[shortest, lengths[shortest] - 1 :]).any()


def test_batches_of_the_memory_mapped_cache_are_float_tensors(corpus):
    timit = open_timit(corpus[0])
    test = timit.split("test")
    assert isinstance(test.x, np.memmap) and isinstance(timit.split("train").x, np.memmap)
    batch = next(test.batches(4))
    assert batch.x.dtype == torch.float32 and batch.x.shape[1:] == (4, FRAME)
    assert (
        batch.mask.shape == batch.x.shape[:2] and int(batch.mask.sum(0).max()) == batch.x.shape[0]
    )
    # denormalise gives the waveform back in [-1, 1]
    np.testing.assert_allclose(
        timit.denormalise(batch.x[0, 0]).numpy(), batch.x[0, 0].numpy() * timit.std + timit.mean
    )


def test_lower_case_layout_one_level_down_gives_the_same_numbers(tmp_path, corpus):
    upper = open_timit(corpus[0])
    write_ldc_tree(tmp_path / "copy" / "timit", lower=True)
    lower = open_timit(tmp_path / "copy")
    assert lower.path.name == "timit"
    assert (lower.mean, lower.std) == pytest.approx((upper.mean, upper.std))
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(lower.split(split).x, upper.split(split).x)


def test_riff_copies_beside_the_sphere_files_are_ignored(corpus):
    root, _ = corpus
    reference = open_timit(root)
    for path in list(root.rglob("*.WAV"))[:3]:
        (path.parent / f"{path.name}.wav").write_bytes(b"RIFF copy")
    again = open_timit(root)
    assert len(again.split("train")) == len(reference.split("train"))


def test_libsndfile_reads_the_fixture_sphere_files_the_same(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    samples = np.arange(-3000, 3000, 7, dtype=np.int16)
    for coding in (False, True):
        path = tmp_path / f"a{coding}.wav"
        path.write_bytes(sphere_bytes(samples, coding=coding))
        data, rate = soundfile.read(path, dtype="int16")
        assert rate == 16000 and soundfile.info(path).format == "NIST"
        np.testing.assert_array_equal(data, samples)
        ours = np.concatenate(list(_audio.audio_blocks(path, 16000)))
        np.testing.assert_allclose(ours, samples / 32768.0)


def test_second_open_reads_the_cache_without_preparing(corpus, monkeypatch):
    root, _ = corpus
    start = time.perf_counter()
    first = open_timit(root)
    prepare = time.perf_counter() - start

    def fail(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr("seqvae_plugins.timit_dataset.prepare_audio", fail)
    start = time.perf_counter()
    second = open_timit(root)
    assert time.perf_counter() - start < max(prepare, 1.0)
    np.testing.assert_array_equal(first.split("test").x, second.split("test").x)
    # a changed file is a new source: prepared again
    next(root.rglob("SA1.WAV")).write_bytes(sphere_bytes(np.ones(3000, dtype=np.int16) * 5))
    with pytest.raises(AssertionError, match="prepared again"):
        open_timit(root)


def test_truncated_sphere_file_is_an_error_naming_it(corpus):
    root, _ = corpus
    victim = sorted(root.rglob("*.WAV"))[4]
    victim.write_bytes(victim.read_bytes()[:-500])
    with pytest.raises(
        UserError, match=rf"{victim.name}: truncated audio: the SPHERE header says \d+ samples"
    ):
        open_timit(root)


def test_corrupt_sphere_header_is_an_error_naming_it(corpus):
    root, _ = corpus
    victim = sorted(root.rglob("*.WAV"))[-1]
    victim.write_bytes(b"NIST_1A\n   1024\n" + b"garbage" * 10)
    with pytest.raises(UserError, match=f"{victim.name}: truncated NIST SPHERE header"):
        open_timit(root)


def _npz(path, dims=FRAME, **changes):
    rng = np.random.default_rng(0)
    arrays = {
        f"{k}_{s}": rng.standard_normal((3, 5, dims)).astype(np.float32)
        for k in "ux"
        for s in ("train", "valid", "test")
    }
    arrays["mask_test"] = np.ones((3, 5), dtype=np.float32)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_preprocessed_npz_is_read_from_the_folder(tmp_path):
    folder = tmp_path / "timit"
    folder.mkdir()
    _npz(folder / NPZ_NAME)
    timit = open_timit(folder)
    assert timit.path.name == NPZ_NAME
    assert len(timit.split("train")) == 3 and timit.split("test").x_dim == FRAME


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dims": 3}, "x_train has 3 features per step; TIMIT frames have 200 samples"),
        ({"x_valid": None}, "missing keys x_valid"),
        (
            {"x_train": np.full((3, 5, FRAME), np.nan, dtype=np.float32)},
            "x_train contains NaN or Inf",
        ),
    ],
)
def test_bad_npz_is_an_error_naming_the_file(tmp_path, change, message):
    path = _npz(tmp_path / NPZ_NAME, **change)
    with pytest.raises(UserError, match=message) as error:
        open_timit(tmp_path).split("train")
    assert str(path) in str(error.value)


def test_missing_corpus_exits_2_listing_places_files_and_source(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQVAE_DATA", str(tmp_path / "corpora"))
    assert main(["train", "--model", "zforcing", "--dataset", "timit"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "corpora" / "timit") in err and str(tmp_path / "data" / "timit") in err
    assert "TRAIN/DR*/<speaker>/*.WAV" in err and NPZ_NAME in err and "LDC93S1" in err


def test_train_works_as_typed_once_timit_sits_in_seqvae_data(tmp_path, monkeypatch, capsys):
    from tests.conftest import TINY

    write_ldc_tree(tmp_path / "corpora" / "timit", train=(1, 2, 4), test=(1, 1, 2))
    monkeypatch.setenv("SEQVAE_DATA", str(tmp_path / "corpora"))
    sets = [a for s in [*TINY, "model.aux.reconstruction.hidden=6"] for a in ("--set", s)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(["train", "--model", "zforcing", "--dataset", "timit", "--max-steps", "2",
                       "--out", str(tmp_path / "run"), *sets])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
