"""benchmarks/reproduce.py: the plan it runs and the report it writes from the runs' rows."""

import argparse
import dataclasses
import json

from benchmarks import reproduce


def _args(tmp_path, *extra):
    return ["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"),
            "--notes", str(tmp_path / "no-notes.md"), *extra]  # fmt: skip


def _fake_run(out, job, **row):
    folder = out / job.key
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(dataclasses.asdict(job)))
    base = {"seed": job.seed, "error": None, "iwae_k": 64, "kl": 0.5, "active_units": 3, "train_seconds": 10.0,
            "eval_seconds": 2.0, "steps": 100, "test_sequences": 77, "test_steps": 4648, "data": "9908980786c4",
            "paper": 8.71}  # fmt: skip
    (folder / "results.json").write_text(json.dumps([{**base, **row}]))


def test_the_plan_runs_every_first_seed_then_the_sweep_then_the_other_seeds(tmp_path):
    args = argparse.Namespace(models=["rnn", "dkf"], files=["quarter", "srnn-npz"], seeds=[0, 1],
                              seed_models=["rnn"], epochs=50, epochs_for=["dkf=100"], sweep=True,
                              sweep_epochs=None)  # fmt: skip
    keys = [(j.key, j.epochs) for j in reproduce.plan(args)]
    first = [("quarter/rnn-seed0", 50), ("quarter/dkf-seed0", 100), ("srnn-npz/rnn-seed0", 50),
             ("srnn-npz/dkf-seed0", 100)]  # fmt: skip
    assert keys[:4] == first
    sweep = keys[4 : 4 + 2 * len(reproduce.SWEEP)]
    assert all("/sweep" in key for key, _ in sweep) and sweep[0][0].startswith("srnn-npz/")
    assert keys[4 + 2 * len(reproduce.SWEEP) :] == [("quarter/rnn-seed1", 50), ("srnn-npz/rnn-seed1", 50)]
    dkf = next(j for j in reproduce.plan(args) if j.model == "dkf")
    assert dkf.sets == reproduce.BUDGET_SETS["dkf"]  # what the shortened budget scales is in its command


def test_the_report_gives_mean_and_std_targets_with_gaps_and_the_commands(tmp_path):
    out = tmp_path / "out"
    for seed, iwae in ((0, 8.8), (1, 9.0)):
        _fake_run(out, reproduce.Job(f"quarter/rnn-seed{seed}", "quarter", "rnn", seed, 50), elbo=iwae, iwae=iwae)
    _fake_run(out, reproduce.Job("quarter/storn-seed0", "quarter", "storn", 0, 50), elbo=8.5, iwae=8.4, paper=6.91)
    sweep = reproduce.Job("srnn-npz/sweep0", "srnn-npz", "zforcing", 0, 50, ["model.aux.bwd.weight=1.0"], "bwd")
    _fake_run(out, sweep, elbo=5.3, iwae=5.2, paper=None, data="d1e51ebf01d5", test_steps=9396)
    assert reproduce.main(_args(tmp_path, "--report-only", "--seeds", "0")) == 0
    summary = json.loads((tmp_path / "docs" / "reproduction.json").read_text())
    rows = {(r["model"], r["variant"]): r for r in summary["rows"]}
    rnn = rows[("rnn", None)]
    assert rnn["seeds"] == [0, 1] and rnn["iwae"] == [8.8, 9.0] and rnn["target"] == "within 5 % of 8.71: met (+0.19)"
    assert "--seeds 0,1" in rnn["command"] and "--preset paper" in rnn["command"]
    assert rows[("storn", None)]["target"] == "<= 6.91: missed (+1.49)"
    assert rows[("zforcing", "bwd")]["command"].endswith("--set model.aux.bwd.weight=1.0 --out runs/reproduce/srnn-npz/sweep0")
    page = (tmp_path / "docs" / "reproduction.md").read_text()
    assert "| 8.900 ± 0.141 (64) |" in page and "4648 predicted test steps, fingerprint 9908980786c4" in page
    assert "## Variants (the sweep)" in page and "zforcing: bwd" in page
