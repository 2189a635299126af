"""``audio-dir`` and ``blizzard``: any audio folder, resampled, framed and normalised like TIMIT."""

from __future__ import annotations

import numpy as np
import pytest
from seqvae_plugins import _audio
from seqvae_plugins.audio_datasets import AudioDir, AudioDirOptions, Blizzard

from seqvae.errors import UserError
from tests.datafiles import sphere_bytes

soundfile = pytest.importorskip("soundfile")
soxr = pytest.importorskip("soxr")

FRAME, ROWS = 200, 4


def small(**changes) -> AudioDirOptions:
    return AudioDirOptions(seq_frames=ROWS, **changes)


@pytest.fixture
def folder(tmp_path):
    """20 files in nested folders: 16 kHz wav, sph, ogg and mp3, 8 kHz flac, stereo wav."""
    rng = np.random.default_rng(3)
    root = tmp_path / "speech"
    written = {}
    for i in range(20):
        n = int(rng.integers(2000, 5000))
        samples = (rng.standard_normal(n) * 0.1).astype(np.float32)
        sub = root / f"speaker{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 5 == 1:
            path = sub / f"u{i:02d}.flac"
            soundfile.write(path, samples, 8000, subtype="PCM_16")
        elif i % 5 == 2:
            path = sub / f"u{i:02d}.sph"
            path.write_bytes(sphere_bytes((samples * 32768).astype(np.int16)))
        elif i % 5 == 4:  # lossy: ogg vorbis and mp3
            path = sub / f"u{i:02d}.{'ogg' if i % 10 == 4 else 'mp3'}"
            soundfile.write(path, samples, 16000)
        elif i % 5 == 3:
            path = sub / f"u{i:02d}.WAV"
            soundfile.write(path, np.stack([samples, -samples * 0.5], 1), 16000, subtype="FLOAT")
        else:
            path = sub / f"u{i:02d}.wav"
            soundfile.write(path, samples, 16000, subtype="FLOAT")
        written[path.relative_to(root).as_posix()] = path
    (root / "notes.txt").write_text("not audio")
    return root


def read_reference(path) -> np.ndarray:
    """What the protocol says the file holds: mono, 16 kHz (soxr's one-shot resampling)."""
    if path.suffix == ".sph":
        return np.frombuffer(path.read_bytes()[1024:], dtype="<i2") / 32768.0
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = data.mean(1)
    return soxr.resample(mono, rate, 16000, quality="HQ") if rate != 16000 else mono


def test_folder_is_split_by_file_resampled_framed_and_normalised(folder):
    dataset = AudioDir(folder, small())
    files = _audio.find_audio(folder)
    assert len(files) == 20
    splits = _audio.split_by_file(files, 1234, 0.05, 0.05)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [18, 1, 1]
    train_audio = np.concatenate([read_reference(p) for p in splits["train"]])
    # resampled lengths: the 8 kHz flac files come out twice as long
    assert dataset._info["train_samples"] == len(train_audio)
    assert dataset.mean == pytest.approx(train_audio.mean(), abs=1e-6)
    assert dataset.std == pytest.approx(train_audio.std(), rel=1e-4)
    train = dataset.split("train")
    frames = len(train_audio) // FRAME
    assert len(train) == (frames - 1) // ROWS and train.x.shape[1:] == (ROWS, FRAME)
    expected = ((train_audio[: frames * FRAME] - dataset.mean) / dataset.std).reshape(frames, FRAME)
    np.testing.assert_allclose(train.u[0], expected[:ROWS], atol=2e-3)
    np.testing.assert_allclose(train.x[0], expected[1 : ROWS + 1], atol=2e-3)
    for name in ("valid", "test"):
        split = dataset.split(name)
        n = len(read_reference(splits[name][0])) // FRAME
        assert len(split) == (n - 1) // ROWS and split.steps == len(split) * ROWS
    assert dataset.sample_rate == 16000 and dataset.unit == "nats per sequence"


def test_small_blocks_give_the_same_frames_as_large_ones(folder, tmp_path, monkeypatch):
    """Preparation streams files block by block: a corpus larger than memory works the same."""
    whole = AudioDir(folder, small())
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(_audio, "BLOCK", 333)
    blocks = AudioDir(folder, small())
    assert blocks._folder != whole._folder
    assert blocks.mean == pytest.approx(whole.mean, rel=1e-6)
    np.testing.assert_allclose(blocks.split("train").x, whole.split("train").x, atol=1e-4)
    assert isinstance(blocks.split("train").x, np.memmap)


def test_blizzard_uses_the_8000_sample_rows(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "blizzard"
    root.mkdir()
    for i in range(20):
        soundfile.write(
            root / f"seg{i:03d}.wav", (rng.standard_normal(9000) * 0.1).astype(np.float32), 16000
        )
    dataset = Blizzard(root)
    train = dataset.split("train")
    assert train.x.shape == ((18 * 9000 // FRAME - 1) // 40, 40, 200)
    assert Blizzard.source_hint and "Blizzard" in Blizzard.expected_files


@pytest.mark.parametrize("damage", ["garbage", "truncated-wav", "truncated-flac"])
def test_bad_audio_file_is_an_error_naming_it(folder, damage):
    if damage == "garbage":
        victim = folder / "speaker0" / "u00.wav"
        victim.write_bytes(b"not audio at all" * 50)
        message = "corrupt or unreadable audio file"
    elif damage == "truncated-wav":
        victim = folder / "speaker0" / "u00.wav"
        victim.write_bytes(victim.read_bytes()[:-1000])
        message = "truncated audio"
    else:
        victim = folder / "speaker1" / "u01.flac"
        victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
        message = "truncated"
    with pytest.raises(UserError, match=message) as error:
        AudioDir(folder, small())
    assert str(victim) in str(error.value)


def test_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no audio files; expected audio files \(\*\.wav"):
        AudioDir(tmp_path / "empty")
