"""Writers of miniature corpora for the data-set tests: SPHERE trees, audio folders, MNIST files,
music pickles as Python 2 wrote them.

Everything is made on the spot from seeded random numbers; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path

import numpy as np


def sphere_bytes(samples: np.ndarray, rate: int = 16000, coding: bool = False) -> bytes:
    """A NIST SPHERE file as the TIMIT CD-ROM writes it: a 1024-byte header, int16 PCM,
    little-endian (byte format 01). TIMIT headers carry no sample_coding; ``coding`` adds it."""
    lines = [
        "NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0",
        "channel_count -i 1", f"sample_count -i {len(samples)}", f"sample_rate -i {rate}",
        f"sample_min -i {int(samples.min())}", f"sample_max -i {int(samples.max())}",
        "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_sig_bits -i 16",
    ]  # fmt: skip
    if coding:
        lines.append("sample_coding -s3 pcm")
    lines.append("end_head")
    header = ("\n".join(lines) + "\n").encode().ljust(1024, b" ")
    assert len(header) == 1024
    return header + samples.astype("<i2").tobytes()


def utterance(rng: np.random.Generator, low: int = 1500, high: int = 4500) -> np.ndarray:
    """int16 speech-like noise of random length."""
    n = int(rng.integers(low, high))
    return (rng.standard_normal(n) * 3000 + 200).clip(-32768, 32767).astype(np.int16)


def write_ldc_tree(
    root: Path,
    train: tuple[int, int, int] = (2, 2, 5),
    test: tuple[int, int, int] = (1, 2, 3),
    seed: int = 0,
    lower: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """TIMIT's layout, ``TRAIN/DR1/FCJF0/SA1.WAV``: (regions, speakers per region, utterances
    per speaker) per split. Returns {split: {relative path: int16 samples}}."""  # fmt: skip
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, np.ndarray]] = {}
    sentences = ["SA1", "SA2", "SI943", "SI1573", "SX43", "SX133", "SX223"]
    for split, (regions, speakers, utterances) in (("TRAIN", train), ("TEST", test)):
        written[split.lower()] = {}
        for r in range(regions):
            for s in range(speakers):
                folder = Path(split) / f"DR{r + 1}" / f"{'FM'[s % 2]}SPK{s}"
                for u in range(utterances):
                    rel = folder / f"{sentences[u]}.WAV"
                    if lower:
                        rel = Path(rel.as_posix().lower())
                    path = root / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    samples = utterance(rng)
                    path.write_bytes(sphere_bytes(samples))
                    # the transcriptions beside the audio must be ignored
                    path.with_suffix(".PHN" if not lower else ".phn").write_text("0 3050 h#\n")
                    written[split.lower()][rel.as_posix()] = samples
    return written


def write_amat(path: Path, images: np.ndarray) -> Path:
    """Larochelle's format: one line of 784 space-separated 0/1 values per image."""
    path.write_text(
        "".join(" ".join(map(str, row)) + "\n" for row in images.reshape(len(images), -1))
    )
    return path


def write_idx(path: Path, images: np.ndarray, gz: bool = False) -> Path:
    """An IDX3 file of uint8 images (N, 28, 28)."""
    n, rows, cols = images.shape
    raw = b"\x00\x00\x08\x03" + b"".join(v.to_bytes(4, "big") for v in (n, rows, cols))
    raw += images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


class Python2Pickler(pickle._Pickler):
    """Pickles bytes the way Python 2 pickled its ``str``: SHORT_BINSTRING, which Python 3 reads
    back only with ``encoding="latin1"`` (Python 3 itself writes ``_codecs.encode`` calls)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        assert len(obj) < 256, "only short strings are needed here"
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_music_pickle(path: Path, data: dict[str, list]) -> Path:
    """A Boulanger-Lewandowski style pickle as Python 2 and numpy 1 wrote it: protocol 2, keys
    as Python 2 strings, notes as numpy int64 scalars, numpy named ``numpy.core.multiarray``."""
    as_numpy = {
        split.encode(): [[tuple(np.int64(n) for n in chord) for chord in seq] for seq in seqs]
        for split, seqs in data.items()
    }
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(as_numpy)
    # protocol 2 names globals as text lines, so the module can be renamed in place
    path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path


def write_music_json(path: Path, data: dict[str, list]) -> Path:
    """The same data as JSON lists of note numbers."""
    path.write_text(json.dumps({s: [[list(c) for c in seq] for seq in v] for s, v in data.items()}))
    return path
