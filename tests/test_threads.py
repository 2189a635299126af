"""seqvae sets its threads itself: idle OpenMP threads sleep, and a process uses its share of
the cores (``--threads``, ``$OMP_NUM_THREADS``, torchrun's ``LOCAL_WORLD_SIZE``, bench jobs)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from seqvae import threads
from seqvae.cli import main
from seqvae.threads import default_threads, quiet_openmp


def test_idle_threads_sleep_unless_the_user_chose_a_wait_policy():
    env: dict[str, str] = {}
    torch_loaded = sys.modules.pop("torch")  # as if torch were not imported yet
    try:
        assert quiet_openmp(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
        for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
            env = dict(chosen)
            assert quiet_openmp(env) and env == chosen  # the user's choice stands
    finally:
        sys.modules["torch"] = torch_loaded
    env = {}
    assert not quiet_openmp(env) and env == {}  # too late once torch (and OpenMP) are loaded


def test_the_command_line_sets_the_wait_policy_before_torch_loads():
    probe = (
        "import os, sys\n"
        "from seqvae.cli import main\n"
        "assert 'torch' not in sys.modules, 'seqvae.cli imported torch'\n"
        "main(['--threads', '1', 'models'])\n"
        "print(os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "PASSIVE"


def test_default_threads_are_this_processes_share_of_its_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert default_threads(environ={}) == 8
    assert default_threads(jobs=3, environ={}) == 2
    assert default_threads(environ={"LOCAL_WORLD_SIZE": "4"}) == 2  # torchrun's processes on this node
    assert default_threads(jobs=16, environ={}) == 1
    assert default_threads(environ={"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "4"}) == 3  # the user's word
    assert default_threads(environ={"OMP_NUM_THREADS": "x"}) == 8


def test_a_cgroup_quota_bounds_the_cores(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path) is None
    assert threads._cgroup_quota(tmp_path / "absent") is None
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.available_cores() == 1


def test_threads_option_sets_torchs_threads(capsys):
    assert main(["--threads", "2", "models"]) == 0
    assert torch.get_num_threads() == 2  # (conftest restores the suite's one thread)
    assert main(["models", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    assert main(["--threads", "0", "models"]) == 2
    assert "--threads: expected a positive number, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-1", "two"])
def test_bad_threads_are_one_line_errors(bad, capsys):
    assert main(["--threads", bad, "models"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_off_a_terminal_training_draws_no_progress_bar(toy_npz, tmp_path):
    """tqdm's own check (disable=None: bars only on a terminal) survives the rank-0 rule."""
    from tests.conftest import TINY

    sets = [a for s in TINY for a in ("--set", s)]
    done = subprocess.run([sys.executable, "-m", "seqvae", "train", "--model", "zforcing", "--dataset", "npz",
                           "--data", str(toy_npz), "--out", str(tmp_path / "run"), "--max-steps", "3",
                           "--set", "model.aux.reconstruction.hidden=6", *sets],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "step/s" not in done.stderr and "it/s" not in done.stderr, done.stderr
