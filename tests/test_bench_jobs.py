"""``seqvae bench --jobs N``: the runs in N processes write what a serial bench writes."""

from __future__ import annotations

import json
import os

import pytest

from seqvae.bench_jobs import cpu_sets
from seqvae.cli import main
from tests.conftest import TINY

SETS = [item for s in [*TINY, "train.eval_every=5"] for item in ("--set", s)]
TIMES = ("train_seconds", "eval_seconds")


def _bench(npz, out, *extra) -> int:
    return main(["bench", "--models", "zforcing-noaux,no-such-model", "--seeds", "0,1", "--dataset", "npz",
                 "--data", str(npz), "--max-steps", "6", "--iwae-k", "2", "--out", str(out), *SETS, *extra])  # fmt: skip


def _rows(out) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMES} for row in json.loads((out / "results.json").read_text())]


@pytest.mark.slow
def test_two_jobs_write_the_result_files_of_a_serial_bench(toy_npz, tmp_path, capsys):
    assert _bench(toy_npz, tmp_path / "serial") == 1  # the unknown model's rows fail, the others run
    assert _bench(toy_npz, tmp_path / "jobs", "--jobs", "2") == 1
    serial, jobs = _rows(tmp_path / "serial"), _rows(tmp_path / "jobs")
    assert [(r["model"], r["seed"]) for r in jobs] == [(m, s) for m in ("zforcing-noaux", "no-such-model")
                                                      for s in (0, 1)]  # fmt: skip
    assert jobs == serial  # every bound, count and error, bit for bit (one thread per run in both)
    assert [r["error"] is None for r in jobs] == [True, True, False, False]
    assert (tmp_path / "jobs" / "results.md").read_text().count("no-such-model") >= 2
    runs = tmp_path / "jobs" / "runs"
    assert all((runs / f"zforcing-noaux-npz-seed{s}" / "result.json").exists() for s in (0, 1))
    assert len(list((tmp_path / "jobs" / "tensorboard").iterdir())) == 2
    # again: every finished run is reused (without a worker), and the result files written again
    capsys.readouterr()
    (tmp_path / "jobs" / "results.json").unlink()
    assert _bench(toy_npz, tmp_path / "jobs", "--jobs", "2") == 1
    # (the workers' own lines go to the terminal, not to this process's captured stdout)
    assert _rows(tmp_path / "jobs") == serial


def test_each_job_gets_its_share_of_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert cpu_sets(3) == [[0, 1], [2, 3], [4, 5]]
    assert cpu_sets(1) == [list(range(8))]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5}, raising=False)
    assert cpu_sets(3) == [[4], [5], [4]]  # more jobs than cores: they share


def test_jobs_must_be_positive(toy_npz, tmp_path, capsys):
    assert _bench(toy_npz, tmp_path / "out", "--jobs", "0") == 2
    assert "--jobs: expected a positive number" in capsys.readouterr().err


def test_bench_under_torchrun_is_refused(toy_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert _bench(toy_npz, tmp_path / "out") == 2
    assert "seqvae bench under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
