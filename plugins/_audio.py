"""Shared audio handling of the speech data sets: reading, resampling, framing, normalising.

Files are read block by block (NIST SPHERE natively, everything else through libsndfile via
``soundfile``), mixed to mono, resampled to the protocol's rate with ``soxr`` where needed, and
appended to flat float32 files in the data-set cache: a corpus larger than memory is never held
whole. One global scalar mean and standard deviation are taken from the training audio and
applied in place, chunk by chunk.

Two layouts of a split, both predicted from their own past (u_t = x_{t-1}):

- ``rows``: the split's audio concatenated, cut into frames of ``frame`` samples, then into rows
  of ``seq_frames`` frames; x of row r is frames 1 + r*S .. (r+1)*S and u the frames one earlier,
  so every frame after the first is predicted once.
- ``whole``: every utterance on its own row, zero-padded, masked; its frames 2..L are predicted.
  The samples after an utterance's last whole frame are dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from seqvae.data import Dataset, Split
from seqvae.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".ogg", ".mp3", ".nist")
BLOCK = 1 << 20
"""Samples read, resampled and normalised at a time."""


# --------------------------------------------------------------------------- reading


def read_sphere_header(path: Path) -> tuple[dict[str, str], int]:
    """The fields of a NIST SPHERE header and its size in bytes."""
    with path.open("rb") as handle:
        head = handle.read(16)
        if not head.startswith(b"NIST_1A"):
            raise UserError(f"{path}: not a NIST SPHERE file (no NIST_1A header)")
        try:
            size = int(head[8:16].split()[0])
        except (ValueError, IndexError):
            raise UserError(f"{path}: corrupt NIST SPHERE header (no header size)") from None
        text = head + handle.read(max(size - 16, 0))
    if len(text) < size:
        raise UserError(f"{path}: truncated NIST SPHERE header ({len(text)} of {size} bytes)")
    fields: dict[str, str] = {}
    for line in text[16:size].decode("latin-1").splitlines():
        parts = line.strip().split(None, 2)
        if parts and parts[0] == "end_head":
            return fields, size
        if len(parts) == 3:
            fields[parts[0]] = parts[2]
    raise UserError(f"{path}: corrupt NIST SPHERE header (no end_head)")


def sphere_blocks(path: Path) -> tuple[int, int, Iterator[np.ndarray]]:
    """(sample rate, samples per channel, float32 mono blocks) of an uncompressed SPHERE file."""
    fields, size = read_sphere_header(path)
    try:
        count = int(fields["sample_count"])
        rate = int(fields["sample_rate"])
        channels = int(fields.get("channel_count", "1"))
        width = int(fields.get("sample_n_bytes", "2"))
    except (KeyError, ValueError) as error:
        raise UserError(f"{path}: NIST SPHERE header lacks a valid {error}") from None
    coding = fields.get("sample_coding", "pcm")
    if coding != "pcm" or width not in (1, 2, 4):
        raise UserError(
            f"{path}: SPHERE sample_coding {coding!r} with {width}-byte samples is not supported "
            "(only uncompressed PCM; convert shorten-compressed files with sph2pipe first)"
        )
    order = fields.get("sample_byte_format", "01" if width == 2 else "0123")
    endian = ">" if order.startswith("1") or order == "3210" else "<"
    dtype = np.dtype(f"{endian}i{width}") if width > 1 else np.dtype("i1")
    expected = count * channels * width
    available = path.stat().st_size - size
    if available < expected:
        raise UserError(
            f"{path}: truncated audio: the SPHERE header says {count} samples, the file holds "
            f"{max(available, 0) // (channels * width)}"
        )
    data = np.memmap(path, dtype=dtype, mode="r", offset=size, shape=(count * channels,))
    scale = float(2 ** (8 * width - 1))

    def blocks() -> Iterator[np.ndarray]:
        step = BLOCK * channels
        for start in range(0, len(data), step):
            block = np.asarray(data[start : start + step], dtype=np.float32) / scale
            yield block.reshape(-1, channels).mean(1) if channels > 1 else block

    return rate, count, blocks()


def _soundfile():
    try:
        import soundfile
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError(
            "reading wav/flac/ogg audio needs the soundfile package: pip install 'seqvae[audio]'"
        ) from None
    return soundfile


def _wav_data_end(path: Path) -> int | None:
    """Where the data chunk of a RIFF/WAVE file says it ends, if the header is plain."""
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return None if size in (0, 0xFFFFFFFF) else handle.tell() + size
            handle.seek(size + (size & 1), 1)


def audio_blocks(path: Path, rate: int) -> Iterator[np.ndarray]:
    """float32 mono blocks of ``path`` at ``rate`` Hz; a bad file is a UserError naming it."""
    try:
        with path.open("rb") as handle:
            is_sphere = handle.read(7) == b"NIST_1A"
    except OSError as error:
        raise UserError(f"{path}: cannot read audio file ({error})") from error
    if is_sphere:
        source_rate, _, blocks = sphere_blocks(path)
    else:
        source_rate, blocks = _soundfile_blocks(path)
    if source_rate != rate:
        blocks = _resampled(blocks, source_rate, rate)
    yield from blocks


def _soundfile_blocks(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    soundfile = _soundfile()
    try:
        handle = soundfile.SoundFile(str(path))
    except Exception as error:  # libsndfile's errors, or not a file at all
        raise UserError(f"{path}: corrupt or unreadable audio file ({error})") from None
    end = _wav_data_end(path) if path.suffix.lower() == ".wav" else None
    if end is not None and end > path.stat().st_size:
        handle.close()
        raise UserError(
            f"{path}: truncated audio: the WAV header says the samples end at byte {end}, "
            f"the file has {path.stat().st_size} bytes"
        )

    def blocks() -> Iterator[np.ndarray]:
        read = 0
        with handle:
            # MPEG headers only estimate their length; the other formats state it exactly
            frames = handle.frames if handle.format != "MP3" else 0
            try:
                for block in handle.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
                    read += len(block)
                    yield block.mean(1) if block.shape[1] > 1 else block[:, 0]
            except Exception as error:
                raise UserError(f"{path}: corrupt or truncated audio file ({error})") from None
        if 0 < frames < 2**62 and read < frames:
            raise UserError(
                f"{path}: truncated audio: the header says {frames} samples, read {read}"
            )

    return handle.samplerate, blocks()


def _resampled(blocks: Iterator[np.ndarray], source: int, target: int) -> Iterator[np.ndarray]:
    try:
        import soxr
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError(
            f"resampling {source} Hz audio to {target} Hz needs the soxr package: "
            "pip install 'seqvae[audio]'"
        ) from None
    stream = soxr.ResampleStream(source, target, 1, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32))
        if len(out):
            yield out
    tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if len(tail):
        yield tail


def find_audio(root: Path) -> list[Path]:
    """Audio files under ``root`` (any depth, any case of suffix), sorted by relative path."""
    files = [
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]  # fmt: skip
    return sorted(files, key=lambda p: p.relative_to(root).as_posix().lower())


# --------------------------------------------------------------------------- preparing


@dataclass
class Protocol:
    """Framing of an audio corpus: rate in Hz, samples per frame, frames per training row."""

    rate: int = 16000
    frame: int = 200
    seq_frames: int = 40


def prepare_audio(
    folder: Path,
    splits: dict[str, list[Path]],
    layouts: dict[str, str],
    protocol: Protocol,
    desc: str,
) -> dict:
    """Write the splits' frames under ``folder``; return the info :class:`AudioDataset` reads.

    ``layouts`` maps each split to ``rows`` or ``whole``; statistics come from ``train``.
    """
    total = sum(len(files) for files in splits.values())
    raw: dict[str, tuple[Path, list[int]]] = {}
    count, total_sum, total_sq = 0, 0.0, 0.0
    with tqdm(total=total, desc=f"preparing {desc}", unit="file", disable=None) as bar:
        for name, files in splits.items():
            path = folder / f"{name}.raw"
            lengths = []
            with path.open("wb") as out:
                for file in files:
                    n = 0
                    for block in audio_blocks(file, protocol.rate):
                        if not np.isfinite(block).all():
                            raise UserError(f"{file}: audio contains NaN or Inf samples")
                        out.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
                        n += len(block)
                        if name == "train":
                            wide = block.astype(np.float64)
                            count += len(block)
                            total_sum += float(wide.sum())
                            total_sq += float(np.dot(wide, wide))
                    lengths.append(n)
                    bar.update(1)
            raw[name] = (path, lengths)
    if count == 0:
        raise UserError(f"{desc}: the training split holds no audio")
    mean = total_sum / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    if not std > 0:
        raise UserError(f"{desc}: the training audio is constant (std 0); cannot normalise it")
    info: dict = {
        "mean": mean, "std": std, "train_samples": count, "rate": protocol.rate,
        "frame": protocol.frame, "seq_frames": protocol.seq_frames, "splits": {},
    }  # fmt: skip
    for name, (path, lengths) in raw.items():
        if layouts[name] == "rows":
            info["splits"][name] = _finish_rows(folder, name, path, mean, std, protocol)
        else:
            info["splits"][name] = _finish_whole(folder, name, path, lengths, mean, std, protocol)
    return info


def _finish_rows(folder, name, raw, mean, std, protocol) -> dict:
    """Normalise the split's stream in place, block by block (plain reads and writes: no
    mapping, so memory stays at one block whatever the corpus size)."""
    frames = raw.stat().st_size // 4 // protocol.frame
    used = frames * protocol.frame
    with raw.open("r+b") as handle:
        handle.truncate(used * 4)  # drop the samples after the last whole frame
        for start in range(0, used, BLOCK):
            handle.seek(start * 4)
            block = np.frombuffer(handle.read(min(BLOCK, used - start) * 4), dtype=np.float32)
            handle.seek(start * 4)
            handle.write(((block - mean) / std).astype(np.float32).tobytes())
    final = folder / f"{name}.f32"
    raw.rename(final)
    rows = max(frames - 1, 0) // protocol.seq_frames
    return {"layout": "rows", "file": final.name, "frames": frames, "rows": rows}


def _finish_whole(folder, name, raw, lengths, mean, std, protocol) -> dict:
    """Write the utterances one padded row at a time into an .npy file."""
    frames = [n // protocol.frame for n in lengths]
    kept = [i for i, f in enumerate(frames) if f >= 2]
    if len(kept) < len(frames):
        warnings.warn(
            f"{name}: {len(frames) - len(kept)} utterances shorter than two frames are left out",
            stacklevel=2,
        )
    longest = max((frames[i] for i in kept), default=2)
    final = folder / f"{name}.npy"
    shape = (len(kept), longest, protocol.frame)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with raw.open("rb") as source, final.open("wb") as out:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(out, header)
        for i in kept:
            source.seek(int(offsets[i]) * 4)
            n = frames[i] * protocol.frame
            utterance = np.frombuffer(source.read(n * 4), dtype=np.float32)
            row = np.zeros((longest, protocol.frame), dtype=np.float32)
            row[: frames[i]] = ((utterance - mean) / std).reshape(frames[i], protocol.frame)
            out.write(row.tobytes())
    raw.unlink()
    steps = np.array([frames[i] - 1 for i in kept], dtype=np.int32)
    np.save(folder / f"{name}.steps.npy", steps)
    return {"layout": "whole", "file": final.name, "shape": list(shape)}


# --------------------------------------------------------------------------- the data set


class AudioDataset(Dataset):
    """Base of the speech data sets: framed, globally normalised waveforms in a cache folder."""

    unit = "nats per sequence"
    support = "real"
    likelihood = "gaussian"
    sample_rate = 16000

    mean: float = 0.0
    std: float = 1.0

    def _open_cache(self, folder: Path, info: dict) -> None:
        self._folder, self._info = folder, info
        self.mean, self.std = float(info["mean"]), float(info["std"])
        self.sample_rate = int(info["rate"])
        self._splits: dict[str, Split] = {}

    @property
    def x_dim(self) -> int:
        return int(self._info["frame"])

    def split(self, name: str) -> Split:
        if name not in self._info["splits"]:
            raise UserError(
                f"{self.name} data set: unknown split {name!r}; expected one of "
                f"{', '.join(self._info['splits'])}"
            )
        if name not in self._splits:
            self._splits[name] = self._read_split(self._info["splits"][name], name)
        return self._splits[name]

    def _read_split(self, info: dict, name: str) -> Split:
        frame = self.x_dim
        path = self._folder / info["file"]
        if info["layout"] == "rows":
            rows, seq = info["rows"], int(self._info["seq_frames"])
            if rows == 0:
                empty = np.zeros((0, seq, frame), dtype=np.float32)
                return Split(empty, empty, np.zeros((0, seq), dtype=np.float32))
            stream = np.memmap(path, dtype=np.float32, mode="r", shape=(info["frames"], frame))
            mask = np.broadcast_to(np.ones(1, dtype=np.float32), (rows, seq))
            return Split(
                stream[: rows * seq].reshape(rows, seq, frame),
                stream[1 : rows * seq + 1].reshape(rows, seq, frame),
                mask,
            )
        steps = np.load(self._folder / f"{name}.steps.npy")
        longest = info["shape"][1]
        mask = (np.arange(longest - 1)[None, :] < steps[:, None]).astype(np.float32)
        if len(steps) == 0:
            empty = np.zeros((0, longest - 1, frame), dtype=np.float32)
            return Split(empty, empty, mask)
        return Split.shifted(np.load(path, mmap_mode="r"), mask)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Frames back to waveform samples in [-1, 1] (flatten (T, frame) for the audio)."""
        return x * self.std + self.mean


def split_by_file(files: list[Path], seed: int, valid: float, test: float) -> dict[str, list[Path]]:
    """A fixed-seed split of whole files; each split keeps the sorted order of ``files``."""
    n = len(files)
    order = np.random.default_rng(seed).permutation(n)
    n_valid, n_test = round(valid * n), round(test * n)
    if n and n - n_valid - n_test < 1:
        raise UserError(f"{n} audio files are too few to split {valid:.0%} / {test:.0%}")
    valid_idx = set(order[:n_valid].tolist())
    test_idx = set(order[n_valid : n_valid + n_test].tolist())
    pick = {
        "train": [f for i, f in enumerate(files) if i not in valid_idx and i not in test_idx],
        "valid": [f for i, f in enumerate(files) if i in valid_idx],
        "test": [f for i, f in enumerate(files) if i in test_idx],
    }  # fmt: skip
    return pick
