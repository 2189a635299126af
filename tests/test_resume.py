"""A run killed with SIGKILL at any moment and started again with the same command ends bitwise
equal to one never interrupted, and its logs hold every step once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqvae.checkpoint import PAUSE_ENV
from seqvae.cli import main
from tests.conftest import TINY

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# 512 training rows in batches of 16: 32 updates per epoch, so 44 updates cross an epoch boundary
SETS = [*TINY, "model.aux.reconstruction.hidden=6", "train.eval_every=8", "train.log_every=2", "train.bucket=2"]
MAX_STEPS = 44


def _args(npz: Path, out: Path) -> list[str]:
    sets = [item for s in SETS for item in ("--set", s)]
    return ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz), "--out", str(out),
            "--max-steps", str(MAX_STEPS), *sets]  # fmt: skip


def _start(args: list[str], pause: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads as this process (conftest)
    env.pop(PAUSE_ENV, None)
    if pause:  # every checkpoint waits this long between its temporary file and the rename
        env[PAUSE_ENV] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "seqvae", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _kill_when(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before the kill: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the kill point never came")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _checkpoint(path: Path) -> dict | None:
    return torch.load(path, weights_only=True) if path.exists() else None


def _last_step(out: Path) -> int | None:
    state = _checkpoint(out / "checkpoints" / "last.pt")
    return None if state is None else state["step"]


def _log(path: Path) -> list[dict]:
    """The log's records without their wall-clock seconds."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _logged_steps(out: Path) -> list[int]:
    return [record["step"] for record in _log(out / "train_log.jsonl")]


def _assert_tensors_equal(a, b, where: str = "") -> None:
    """Every tensor of two nested checkpoints equal bit for bit; everything else equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_tensors_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: largest difference {(a.double() - b.double()).abs().max().item():g}"
    else:
        assert a == b, where


@pytest.mark.slow
def test_a_run_killed_three_times_ends_bitwise_equal_to_an_uninterrupted_one(toy_npz, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert main(_args(toy_npz, reference)) == 0
    checkpoints = out / "checkpoints"

    # 1. during the write of the second last.pt (update 16): its temporary file exists, last.pt
    # still holds update 8, and the log already runs to 16
    proc = _start(_args(toy_npz, out), pause=0.3)
    _kill_when(proc, lambda: (checkpoints / "last.pt").exists() and any(checkpoints.glob(".last.pt.*.tmp")))
    assert _last_step(out) == 8 and any(checkpoints.glob(".last.pt.*.tmp"))
    assert _logged_steps(out)[-1] == 16

    # 2. resumed mid-epoch (batch 8 of 32); killed just after last.pt is written at update 24
    proc = _start(_args(toy_npz, out), pause=0.3)
    _kill_when(proc, lambda: (_last_step(out) or 0) >= 24)
    assert _last_step(out) == 24

    # 3. resumed at batch 24; killed mid-epoch between checkpoints, after update 36 was logged
    # and with last.pt at the end of the first epoch (update 32)
    proc = _start(_args(toy_npz, out), pause=0.3)
    _kill_when(proc, lambda: (_logged_steps(out) or [0])[-1] >= 36)
    assert _checkpoint(checkpoints / "last.pt")["position"] == {"epoch": 0, "batch": 32}

    # 4. to the end
    proc = _start(_args(toy_npz, out))
    assert proc.wait() == 0, proc.stderr.read()

    expected, got = _checkpoint(reference / "checkpoints" / "last.pt"), _checkpoint(checkpoints / "last.pt")
    for key in ("model", "optimizer", "rng", "position", "counters", "best_valid"):
        _assert_tensors_equal(expected[key], got[key], key)
    assert got["step"] == MAX_STEPS and got["position"] == {"epoch": 1, "batch": MAX_STEPS - 32}
    _assert_tensors_equal(_checkpoint(reference / "checkpoints" / "best.pt")["model"],
                          _checkpoint(checkpoints / "best.pt")["model"], "best")  # fmt: skip
    for name in ("train_log.jsonl", "val_log.jsonl"):  # no step missing, none twice
        assert _log(out / name) == _log(reference / name), name
    assert _logged_steps(out) == list(range(2, MAX_STEPS + 1, 2))
    assert not any(checkpoints.glob("*.tmp")) and not any(out.glob(".*.tmp"))


def _bench(npz: Path, out: Path, steps: int) -> int:
    sets = [item for s in [*TINY, "train.eval_every=5", "train.log_every=1"] for item in ("--set", s)]
    return main(["bench", "--models", "zforcing-noaux", "--dataset", "npz", "--data", str(npz), "--max-steps",
                 str(steps), "--iwae-k", "2", "--out", str(out), *sets])  # fmt: skip


@pytest.mark.slow
def test_a_resumed_bench_run_has_each_step_once_in_tensorboard_and_the_log(toy_npz, tmp_path):
    out = tmp_path / "bench"
    run = out / "runs" / "zforcing-noaux-npz-seed0"
    assert _bench(toy_npz, out, 5) == 0
    at_five = (run / "checkpoints" / "last.pt").read_bytes()
    (run / "result.json").unlink()
    assert _bench(toy_npz, out, 10) == 0  # logs updates 6 to 10
    # as if killed after logging update 10 with last.pt still at update 5: 6 to 10 run again
    (run / "checkpoints" / "last.pt").write_bytes(at_five)
    (run / "result.json").unlink()
    assert _bench(toy_npz, out, 10) == 0

    assert _logged_steps(run) == list(range(1, 11))
    assert [r["step"] for r in _log(run / "val_log.jsonl")] == [5, 10]
    events = EventAccumulator(str(out / "tensorboard" / "zforcing-noaux-npz-seed0"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))
    assert [e.step for e in events.Scalars("train/skipped_steps")] == list(range(1, 11))
    assert [e.step for e in events.Scalars("val/elbo")] == [5, 10]


def test_a_checkpoint_written_before_the_run_state_still_resumes(toy_npz, tmp_path):
    """Format 1: torch's generator state as ``rng``, the shuffle state as ``shuffle_rng``, no
    position (the epoch starts over), and a composition without the options added since."""
    from seqvae_plugins.npz_dataset import NpzDataset

    from seqvae.train import train
    from tests.conftest import tiny

    comp, out = tiny("zforcing-noaux"), tmp_path / "run"
    train(comp, NpzDataset(toy_npz, None), out, max_steps=4, progress=False)
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    old = {key: state[key] for key in ("name", "composition", "x_dim", "model", "optimizer", "step", "seed",
                                       "train_seconds", "best_valid")}  # fmt: skip
    del old["composition"]["train"]["max_consecutive_skips"]
    torch.save({**old, "rng": state["rng"]["torch"], "shuffle_rng": state["rng"]["shuffle"]}, last)
    result = train(comp, NpzDataset(toy_npz, None), out, max_steps=6, progress=False)
    assert result.step == 6
    assert torch.load(last, weights_only=True)["position"] == {"epoch": 0, "batch": 2}  # the epoch began again
