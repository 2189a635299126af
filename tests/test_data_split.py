"""Splits over tensors, numpy arrays and memory maps batch the same; results in each unit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqvae.data import Dataset, Split, in_unit
from seqvae.errors import UserError


def sequences(n: int = 7, steps: int = 6, dims: int = 3):
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((n, steps + 1, dims)).astype(np.float32)
    lengths = rng.integers(2, steps + 1, size=n)
    mask = (np.arange(steps)[None] < lengths[:, None]).astype(np.float32)
    seq[:, 1:] *= mask[..., None]
    return seq, mask


def test_memory_mapped_split_batches_like_a_tensor_split(tmp_path):
    seq, mask = sequences()
    np.save(tmp_path / "seq.npy", seq)
    mapped = Split.shifted(np.load(tmp_path / "seq.npy", mmap_mode="r"), mask)
    tensors = Split(
        torch.from_numpy(seq[:, :-1]), torch.from_numpy(seq[:, 1:]), torch.from_numpy(mask)
    )
    assert isinstance(mapped.x, np.memmap)
    assert (
        (len(mapped), mapped.x_dim, mapped.steps)
        == (len(tensors), tensors.x_dim, tensors.steps)
        == (7, 3, int(mask.sum()))
    )
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for a, b in zip(
        mapped.batches(3, shuffle=True, generator=g1),
        tensors.batches(3, shuffle=True, generator=g2),
        strict=True,
    ):
        assert a.x.dtype == torch.float32 and a.x.shape == b.x.shape
        for field in ("u", "x", "mask"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field))


def test_integer_arrays_become_float_batches():
    ids = np.arange(24, dtype=np.int32).reshape(2, 4, 3)
    mask = np.broadcast_to(np.ones(1, np.float32), (2, 3))
    split = Split.shifted(ids, mask)
    batch = next(split.batches(2))
    assert batch.x.dtype == torch.float32 and batch.x[0, 1].tolist() == [15.0, 16.0, 17.0]
    assert split.steps == 6


def test_shapes_that_do_not_fit_are_an_error():
    with pytest.raises(UserError, match="split shapes do not fit"):
        Split(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.zeros((2, 4)))


def test_results_in_each_unit():
    # a split of 4 sequences, 10 steps, total log-likelihood -20 nats
    assert in_unit("nats per sequence", -20.0, 4, 10) == -5.0
    assert in_unit("nats per step", -20.0, 4, 10) == 2.0
    assert in_unit("nats per image", -20.0, 4, 10) == 5.0
    assert in_unit("perplexity", -20.0, 4, 10) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="unknown unit"):
        in_unit("bits", 0.0, 1, 1)


class Held(Dataset):
    """A data set over given splits, counting the calls to split()."""

    name = "held"

    def __init__(self, splits, support="real"):
        super().__init__(None, None)
        self.splits, self.support, self.calls = splits, support, 0

    def split(self, name):
        self.calls += 1
        return self.splits[name]


def test_fingerprint_hashes_content_in_row_chunks_once(tmp_path, monkeypatch):
    import seqvae.data

    seq, mask = sequences(n=9)
    np.save(tmp_path / "seq.npy", seq)
    mapped = Split.shifted(np.load(tmp_path / "seq.npy", mmap_mode="r"), mask)
    tensors = Split(torch.from_numpy(seq[:, :-1]), torch.from_numpy(seq[:, 1:]), torch.from_numpy(mask))
    whole = Held(dict.fromkeys(("train", "valid", "test"), tensors))
    expected = whole.fingerprint
    assert len(expected) == 12 and whole.fingerprint == expected and whole.calls == 3  # cached
    monkeypatch.setattr(seqvae.data, "FINGERPRINT_CHUNK_BYTES", 50)  # about one row at a time
    chunked = Held(dict.fromkeys(("train", "valid", "test"), mapped))
    assert chunked.fingerprint == expected
    as_float64 = Split.shifted(seq.astype(np.float64), mask.astype(np.float64))
    assert Held(dict.fromkeys(("train", "valid", "test"), as_float64)).fingerprint == expected
    other = Split.shifted(seq[:, ::-1].copy(), mask)
    assert Held({"train": tensors, "valid": tensors, "test": other}).fingerprint != expected
    binary = Split.shifted((seq > 0).astype(np.float32), mask)
    binary_fp = Held(dict.fromkeys(("train", "valid", "test"), binary), "binary").fingerprint
    assert binary_fp != Held(dict.fromkeys(("train", "valid", "test"), binary)).fingerprint  # uint8 vs float32
