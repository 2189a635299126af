"""`seqvae sample`: generation from a trained checkpoint into a batch-major npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqvae.checkpoint import load_checkpoint, model_from_checkpoint
from seqvae.cli import main
from seqvae.testing.data import write_demo_npz
from tests.conftest import TINY


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add waiting, a lot of it on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model trained for three updates by `seqvae train`."""
    tmp = tmp_path_factory.mktemp("sample")
    npz = write_demo_npz(tmp / "toy.npz", dims=3, steps=12)
    sets = [item for s in [*TINY, "model.aux.reconstruction.hidden=6"] for item in ("--set", s)]
    out = tmp / "run"
    args = ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz),
            "--out", str(out), "--max-steps", "3", *sets]  # fmt: skip
    assert main(args) == 0
    return out / "checkpoints" / "last.pt"


def _sample(checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["sample", str(checkpoint), "--n", "4", "--steps", "7", "--out", str(out), *extra])


def test_sample_writes_batch_major_finite_sequences(checkpoint, tmp_path, capsys):
    out = tmp_path / "samples" / "x.npz"  # the folder does not exist yet
    assert _sample(checkpoint, out, "--seed", "3") == 0
    with np.load(out) as data:
        assert data.files == ["x"]
        x = data["x"]
    assert x.shape == (4, 7, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    assert f"wrote {out}" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["x.npz"]  # no temporary file left behind


def test_samples_are_the_model_sampler_transposed_and_follow_the_seed(checkpoint, tmp_path):
    paths = [tmp_path / f"{name}.npz" for name in ("a", "b", "c")]
    for path, seed in zip(paths, ("5", "5", "6"), strict=True):
        assert _sample(checkpoint, path, "--seed", seed) == 0
    a, b, c = (np.load(path)["x"] for path in paths)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)

    model, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    torch.manual_seed(5)
    expected = model.eval().sample(4, 7).transpose(0, 1).numpy()  # (steps, n, D) -> (n, steps, D)
    np.testing.assert_array_equal(a, expected)


def _fails_naming(args: list[str], name: str, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqvae: error:") and name in err, err


def test_sample_errors_name_the_file_and_exit_2(checkpoint, tmp_path, capsys):
    out = tmp_path / "x.npz"
    missing = tmp_path / "nope.pt"
    _fails_naming(["sample", str(missing), "--out", str(out)], str(missing), capsys)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    _fails_naming(["sample", str(garbage), "--out", str(out)], str(garbage), capsys)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    _fails_naming(["sample", str(foreign), "--out", str(out)], str(foreign), capsys)

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    _fails_naming(["sample", str(tensor), "--out", str(out)], str(tensor), capsys)

    _fails_naming(["sample", str(checkpoint), "--n", "0", "--out", str(out)], "--n", capsys)
    tpu = ["sample", str(checkpoint), "--device", "tpu", "--out", str(out)]
    _fails_naming(tpu, "--device", capsys)
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sample_on_cuda(checkpoint, tmp_path):
    out = tmp_path / "x.npz"
    assert _sample(checkpoint, out, "--device", "cuda") == 0
    x = np.load(out)["x"]
    assert x.shape == (4, 7, 3) and np.isfinite(x).all()
