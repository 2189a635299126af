"""The ``seqmnist`` and ``seqmnist-pixel`` data sets: binarised MNIST read as a sequence.

Sources, in the data folder:

- Larochelle's fixed binarisation, ``binarized_mnist_{train,valid,test}.amat`` (50000 / 10000 /
  10000 images, one line of 784 zeros and ones each): the published numbers use these.
- the IDX files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (optionally
  ``.gz``), binarised once with a fixed seed (pixel on with probability intensity / 255); the
  last sixth of the training images (10000 of 60000) is the validation split.

``seqmnist`` reads an image row by row (28 steps of 28 pixels), ``seqmnist-pixel`` pixel by
pixel (784 steps of 1). The first step is predicted from zeros; Bernoulli output; NLL per image.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from seqvae import hookimpl
from seqvae.cache import cached, fingerprint
from seqvae.data import Dataset, Split
from seqvae.errors import UserError

PROTOCOL_VERSION = 1
SIDE = 28
PIXELS = SIDE * SIDE
AMAT = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}
IDX = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
BINARISE_SEED = 0
VALID_SHARE = 6
"""The last 1/6 of the IDX training images (10000 of 60000) are the validation split."""


@dataclass
class SeqMnistOptions:
    order: Literal["row", "pixel"] = "row"
    """``row``: 28 steps of 28 pixels; ``pixel``: 784 steps of 1 pixel."""


class SeqMnist(Dataset):
    """Binarised MNIST row by row (28 x 28), Bernoulli output, NLL per image."""

    name = "seqmnist"
    Options = SeqMnistOptions
    unit = "nats per image"
    support = "binary"
    likelihood = "bernoulli"
    expected_files = (
        f"Larochelle's {', '.join(AMAT.values())}, or the IDX files "
        f"{IDX['train']} and {IDX['test']} (optionally .gz)"
    )
    source_hint = (
        "MNIST is from Yann LeCun and Corinna Cortes (the IDX files); the fixed binarisation is "
        "Hugo Larochelle's (binarized_mnist_*.amat); seqvae does not download either"
    )

    def __init__(self, path: Path | None, options: SeqMnistOptions | None = None) -> None:
        options = options or self.Options()
        super().__init__(path, options)
        if self.path is None or not self.path.is_dir():
            raise UserError(
                f"{self.name}: {self.path} is not a folder; expected {self.expected_files}"
            )
        amat = {split: self.path / name for split, name in AMAT.items()}
        if all(p.is_file() for p in amat.values()):
            files, kind = list(amat.values()), "amat"
        else:
            idx = {split: _find_idx(self.path, name) for split, name in IDX.items()}
            if None in idx.values():
                raise UserError(
                    f"{self.path}: no MNIST files; expected {self.expected_files}. "
                    f"{self.source_hint}"
                )
            files, kind = list(idx.values()), "idx"
        key = {
            "dataset": "seqmnist", "protocol": PROTOCOL_VERSION, "root": str(self.path.resolve()),
            "source": fingerprint(files, self.path), "kind": kind, "seed": BINARISE_SEED,
        }  # fmt: skip
        build = _build_amat if kind == "amat" else _build_idx
        self._folder, self._info = cached("seqmnist", key, lambda out: build(out, files))
        self.source = kind
        self._splits: dict[str, Split] = {}

    @property
    def x_dim(self) -> int:
        return SIDE if self.options.order == "row" else 1

    def sample_image(self, x: torch.Tensor) -> torch.Tensor:
        """One sequence (T, D) in either order as the (28, 28) image it reads."""
        return x.reshape(SIDE, SIDE)

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise UserError(f"{self.name}: unknown split {name!r}; expected train, valid or test")
        if name not in self._splits:
            images = np.load(self._folder / f"{name}.npy", mmap_mode="r")  # (N, 784) uint8
            steps = SIDE if self.options.order == "row" else PIXELS
            seq = np.zeros((len(images), steps + 1, self.x_dim), dtype=np.uint8)
            seq[:, 1:] = images.reshape(len(images), steps, self.x_dim)
            mask = np.broadcast_to(np.ones(1, dtype=np.float32), (len(images), steps))
            self._splits[name] = Split.shifted(seq, mask)
        return self._splits[name]


class SeqMnistPixel(SeqMnist):
    """Binarised MNIST pixel by pixel (784 x 1), Bernoulli output, NLL per image."""

    name = "seqmnist-pixel"

    def __init__(self, path: Path | None, options: SeqMnistOptions | None = None) -> None:
        super().__init__(path, options or SeqMnistOptions(order="pixel"))


def read_amat(path: Path) -> np.ndarray:
    """Images (N, 784) uint8 of one ``.amat`` file; anything but 0/1 values is an error."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error})") from error
    images = []
    for number, line in enumerate(lines, 1):
        chars = np.frombuffer(line, dtype=np.uint8)
        if len(chars) == 2 * PIXELS - 1 and (chars[1::2] == ord(" ")).all():
            values = chars[::2]  # the usual layout: single digits, single spaces
        else:
            tokens = line.split()
            if not tokens:
                continue
            values = np.frombuffer(b"".join(tokens), dtype=np.uint8)
            if len(values) != len(tokens):
                raise UserError(f"{path}: line {number}: expected only 0 and 1 values")
        if len(values) != PIXELS:
            raise UserError(
                f"{path}: line {number} has {len(values)} values; expected {PIXELS} (28 x 28)"
            )
        values = values - np.uint8(ord("0"))  # wraps anything below "0" to a large value
        if (values > 1).any():
            raise UserError(f"{path}: line {number}: expected only 0 and 1 values")
        images.append(values)
    return np.stack(images) if images else np.zeros((0, PIXELS), dtype=np.uint8)


def read_idx_images(path: Path) -> np.ndarray:
    """Images (N, 784) uint8 of an IDX3 file (optionally gzipped)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise UserError(f"{path}: cannot read ({error})") from error
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise UserError(f"{path}: not an IDX file of uint8 images (magic 0x00000803)")
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    if (rows, cols) != (SIDE, SIDE):
        raise UserError(f"{path}: images are {rows} x {cols}; expected 28 x 28")
    if len(raw) - 16 < n * PIXELS:
        raise UserError(
            f"{path}: truncated: the header says {n} images, the file holds "
            f"{(len(raw) - 16) // PIXELS}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=n * PIXELS, offset=16).reshape(n, PIXELS)


def binarise(images: np.ndarray, seed: int) -> np.ndarray:
    """Each pixel on with probability intensity / 255, drawn once with a fixed seed."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) * 255 < images).astype(np.uint8)


def _build_amat(out: Path, files: list[Path]) -> dict:
    sizes = {}
    for split, path in tqdm(
        list(zip(AMAT, files, strict=True)), desc="preparing seqmnist", disable=None
    ):
        images = read_amat(path)
        np.save(out / f"{split}.npy", images)
        sizes[split] = len(images)
    return {"sizes": sizes}


def _build_idx(out: Path, files: list[Path]) -> dict:
    train = binarise(read_idx_images(files[0]), BINARISE_SEED)
    test = binarise(read_idx_images(files[1]), BINARISE_SEED + 1)
    n_valid = len(train) // VALID_SHARE
    splits = {
        "train": train[: len(train) - n_valid],
        "valid": train[len(train) - n_valid :],
        "test": test,
    }
    for split, images in splits.items():
        np.save(out / f"{split}.npy", images)
    return {"sizes": {split: len(images) for split, images in splits.items()}}


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (
        name,
        f"{name}.gz",
        name.replace("-idx", ".idx"),
        name.replace("-idx", ".idx") + ".gz",
    ):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(SeqMnist)
    registry.add(SeqMnistPixel)
