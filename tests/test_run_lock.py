"""One run per folder: a second process is refused with status 2, a dead one's lock taken over."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from seqvae import run_lock
from seqvae.checkpoint import PAUSE_ENV
from seqvae.cli import main
from seqvae.run_lock import RunFolderInUse, RunLock
from tests.conftest import TINY


def _args(npz, out) -> list[str]:
    sets = [item for s in [*TINY, "model.aux.reconstruction.hidden=6", "train.eval_every=4"] for item in ("--set", s)]
    return ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz), "--out", str(out),
            "--max-steps", "8", *sets]  # fmt: skip


def _seqvae(args, pause: float | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(PAUSE_ENV, None)
    if pause:
        env[PAUSE_ENV] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "seqvae", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for_holder(path, proc, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        text = path.read_text() if path.exists() else ""
        if text and json.loads(text)["pid"] == proc.pid:
            return json.loads(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} never named pid {proc.pid}")


@pytest.mark.skipif(run_lock.fcntl is None, reason="the flock lock needs fcntl")
@pytest.mark.slow
def test_a_second_train_on_a_folder_in_use_exits_2_and_a_dead_ones_lock_is_taken_over(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    first = _seqvae(_args(toy_npz, out), pause=60)  # sits in its first checkpoint write
    try:
        holder = _wait_for_holder(out / "run.lock", first)
        assert holder["host"] == socket.gethostname()
        second = _seqvae(_args(toy_npz, out))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and first.poll() is None
        assert err.startswith(f"seqvae: error: {out}: in use by another seqvae process (pid {first.pid} on {holder['host']}")
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (out / "checkpoints" / "last.pt").exists()
    # the killed process's lock went with it: the same command now trains (from the start)
    assert main(_args(toy_npz, out)) == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 8
    assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()


HOLD = "import sys; from seqvae.run_lock import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); print('held', flush=True); sys.stdin.read()"


@pytest.mark.skipif(run_lock.fcntl is None, reason="the flock lock needs fcntl")
def test_a_folder_held_by_another_process_is_refused_until_that_process_ends(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        expected = re.escape(f"{folder}: in use by another seqvae process (pid {holder.pid} on {socket.gethostname()}")
        with pytest.raises(RunFolderInUse, match=f"^{expected}"):
            RunLock(folder).acquire()
    finally:
        holder.stdin.close()  # it ends, and its lock with it
        holder.wait()
    with RunLock(folder):
        assert json.loads((folder / "run.lock").read_text())["pid"] == os.getpid()


def test_a_folder_held_by_this_process_is_the_same_hold(tmp_path):
    """seqvae bench may hold a run folder around train, which takes it again."""
    folder = tmp_path / "run"
    with RunLock(folder):
        with RunLock(folder):
            pass
        holder = subprocess.run([sys.executable, "-c", HOLD, str(folder)], input="", capture_output=True, text=True)
        assert holder.returncode == 1 and f"pid {os.getpid()}" in holder.stderr  # still held
    holder = subprocess.run([sys.executable, "-c", HOLD, str(folder)], input="", capture_output=True, text=True)
    assert holder.returncode == 0, holder.stderr


@pytest.fixture
def pid_file_lock(monkeypatch):
    """The fallback of platforms without fcntl."""
    monkeypatch.setattr(run_lock, "fcntl", None)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_without_fcntl_a_live_holder_is_refused_and_a_dead_ones_file_taken_over(tmp_path, pid_file_lock):
    folder = tmp_path / "run"
    folder.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": alive.pid, "host": socket.gethostname()}
        (folder / "run.lock").write_text(json.dumps(holder))
        with pytest.raises(RunFolderInUse, match=f"pid {alive.pid} on {socket.gethostname()}"):
            RunLock(folder).acquire()
    finally:
        alive.kill()
        alive.wait()
    (folder / "run.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with RunLock(folder):
        assert json.loads((folder / "run.lock").read_text())["pid"] == os.getpid()
    assert not (folder / "run.lock").exists()  # released


def test_without_fcntl_another_hosts_holder_is_refused(tmp_path, pid_file_lock):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.lock").write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.example"}))
    with pytest.raises(RunFolderInUse, match="on elsewhere.example"):
        RunLock(folder).acquire()
