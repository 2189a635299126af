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
    n_sweep = 2 * len(reproduce.SWEEP) + sum(len(v[1]) for v in reproduce.OTHER_VARIANTS.values())
    sweep = keys[4 : 4 + n_sweep]
    assert all("/sweep" in key for key, _ in sweep) and sweep[0][0].startswith("srnn-npz/")
    assert ("quarter/sweep7", 100.0) in sweep  # the DKF annealing variant: its own budget
    seeded = list(reproduce.SWEEP).index(reproduce.SEEDED_VARIANTS[0])
    assert keys[4 + n_sweep :] == [(f"srnn-npz/sweep{seeded}-seed1", 50), (f"quarter/sweep{seeded}-seed1", 50),
                                   ("quarter/rnn-seed1", 50), ("srnn-npz/rnn-seed1", 50)]  # fmt: skip
    dkf = next(j for j in reproduce.plan(args) if j.model == "dkf")
    assert dkf.sets == reproduce.BUDGET_SETS["dkf"]  # what the shortened budget scales is in its command


def test_the_report_gives_mean_and_std_targets_with_gaps_the_commands_and_the_missing_runs(tmp_path):
    out = tmp_path / "out"
    for seed, iwae in ((0, 8.8), (1, 9.0)):
        _fake_run(out, reproduce.Job(f"quarter/rnn-seed{seed}", "quarter", "rnn", seed, 50), elbo=iwae, iwae=iwae)
    _fake_run(out, reproduce.Job("quarter/storn-seed0", "quarter", "storn", 0, 50), elbo=8.5, iwae=8.4, paper=6.91)
    name, sets = next(iter(reproduce.SWEEP.items()))
    sweep = reproduce.Job("srnn-npz/sweep0", "srnn-npz", "zforcing", 0, 50, sets, name)
    _fake_run(out, sweep, elbo=5.3, iwae=5.2, paper=None, data="d1e51ebf01d5", test_steps=9396)
    # a run outside the plan is not reported: every number comes from a run the plan names
    _fake_run(out, reproduce.Job("quarter/by-hand", "quarter", "storn", 0, 50, [], "by hand"), elbo=1.0, iwae=1.0)
    assert reproduce.main(_args(tmp_path, "--report-only", "--seeds", "0,1", "--sweep")) == 0
    summary = json.loads((tmp_path / "docs" / "reproduction.json").read_text())
    rows = {(r["model"], r["variant"]): r for r in summary["rows"]}
    assert set(rows) == {("rnn", None), ("storn", None), ("zforcing", name)}
    rnn = rows[("rnn", None)]
    assert rnn["seeds"] == [0, 1] and rnn["iwae"] == [8.8, 9.0] and rnn["target"] == "within 5 % of 8.71: met (+0.19)"
    assert "--seeds 0,1" in rnn["command"] and "--preset paper" in rnn["command"]
    assert rows[("storn", None)]["target"] == "<= 6.91: missed (+1.49)"
    assert rows[("zforcing", name)]["command"].endswith(f"--set {sets[-1]} --out runs/reproduce/srnn-npz/sweep0")
    assert "quarter/dkf-seed0" in summary["missing"] and "quarter/rnn-seed1" not in summary["missing"]
    page = (tmp_path / "docs" / "reproduction.md").read_text()
    assert "| 8.900 ± 0.141 (64) |" in page and "4648 predicted test steps, fingerprint 9908980786c4" in page
    assert "## Variants (the sweep)" in page and f"zforcing: {name}" in page
    assert "## Runs of the plan that have not finished" in page and "`srnn-npz/srnn-seed1`" in page
