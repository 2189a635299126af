"""Checkpoints on disk: atomic writes, and a clear one-line error for every file that is not one
of ours (pickled objects, truncated, foreign, another composition's weights)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from seqvae.checkpoint import atomic_write_bytes, load_checkpoint
from seqvae.cli import main
from seqvae.testing.data import write_demo_npz
from tests.conftest import TINY, tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained for two updates by `seqvae train`, and its data."""
    tmp = tmp_path_factory.mktemp("checkpoints")
    npz = write_demo_npz(tmp / "toy.npz", dims=3, steps=12)
    sets = [item for s in [*TINY, "model.aux.reconstruction.hidden=6"] for item in ("--set", s)]
    out = tmp / "run"
    args = ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz), "--out", str(out),
            "--max-steps", "2", *sets]  # fmt: skip
    assert main(args) == 0
    return out / "checkpoints" / "last.pt", npz


class Payload:
    """Unpickles as ``os.system(command)``: what a malicious checkpoint does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _pickled(path: Path, good: Path) -> Path:
    marker = path.parent / "ran"
    torch.save({**torch.load(good, weights_only=True), "extra": Payload(f"touch {marker}")}, path)
    return path


def _truncated(path: Path, good: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(path: Path, good: Path) -> Path:
    path.write_bytes(b"")
    return path


def _random(path: Path, good: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _foreign_dict(path: Path, good: Path) -> Path:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    return path


def _tensor(path: Path, good: Path) -> Path:
    torch.save(torch.zeros(2), path)
    return path


def _mismatched(path: Path, good: Path) -> Path:
    """Our checkpoint, with the weights of another composition (other sizes, no aux network)."""
    other, _ = tiny_model("zforcing-noaux", "model.decoder.hidden=5")
    torch.save({**torch.load(good, weights_only=True), "model": other.state_dict()}, path)
    return path


CASES = {
    "pickled": (_pickled, "refused: it needs the Python object posix.system to load; seqvae checkpoints hold only "
                          "tensors and primitives, so a file that needs more is not one"),
    "truncated": (_truncated, "the file is empty, truncated or corrupted"),
    "empty": (_empty, "the file is empty, truncated or corrupted"),
    "random": (_random, "not a seqvae checkpoint: not a file written by torch.save of tensors and primitives"),
    "foreign dict": (_foreign_dict, "not a seqvae checkpoint (a dict without the 'composition', 'model', 'x_dim'"),
    "tensor": (_tensor, "not a seqvae checkpoint (it holds a Tensor, not a dict)"),
    "mismatched": (_mismatched, "its weights do not fit its composition ("),
}  # fmt: skip


@pytest.mark.parametrize("command", ["eval", "sample"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_file_that_is_not_our_checkpoint_is_one_line_naming_it_with_status_2(trained, tmp_path, capsys, case, command):
    good, npz = trained
    make, message = CASES[case]
    path = make(tmp_path / "bad.pt", good)
    args = {"eval": ["eval", str(path), "--dataset", "npz", "--data", str(npz)],
            "sample": ["sample", str(path), "--out", str(tmp_path / "x.npz")]}[command]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"seqvae: error: {path}: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # PyTorch's advice for a refused file would run its payload: never passed on
    assert "weights_only" not in err and "add_safe_globals" not in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "x.npz").exists()


def test_the_mismatch_message_says_what_differs(trained, tmp_path):
    path = _mismatched(tmp_path / "bad.pt", trained[0])
    with pytest.raises(Exception, match=r"\d+ missing, e\.g\. .*; \d+ of another shape, e\.g\. \S+ is \(\d+.*\), expected"):
        from seqvae.checkpoint import model_from_checkpoint

        model_from_checkpoint(load_checkpoint(path), source=str(path))


def test_a_checkpoint_loads_weights_only_and_holds_the_whole_run_state(trained):
    state = torch.load(trained[0], weights_only=True)
    assert state["step"] == 2 and state["position"] == {"epoch": 0, "batch": 2}
    assert set(state["rng"]) == {"torch", "cuda", "shuffle"} and state["counters"]["skipped_steps"] == 0
    assert {"model", "optimizer", "composition", "x_dim", "best_valid", "seed"} <= set(state)


def test_atomic_writes_fsync_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "a" / "x.bin", lambda handle: handle.write(b"123"))
    assert synced == ["file", "folder"]
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"123" and os.listdir(tmp_path / "a") == ["x.bin"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, broken)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]
