"""seqvae bench and seqvae eval: bounds, result files, TensorBoard tags, faults and resuming."""

import csv
import json
import re
import sys

import pytest
import torch
from seqvae_plugins.npz_dataset import NpzDataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqvae.cli import main
from seqvae.data import Batch
from seqvae.evaluate import evaluate, iwae_bound, log_weights
from seqvae.objective import compute_terms
from seqvae.results import FIELDS
from seqvae.train import train
from tests.conftest import TINY, batch, tiny, tiny_model

SETS = [item for s in [*TINY, "train.eval_every=5", "train.val_iwae_k=2"] for item in ("--set", s)]


def test_iwae_with_one_sample_equals_the_single_sample_elbo():
    model, comp = tiny_model()
    model.eval()
    u, x, mask = batch(steps=7, size=3)
    torch.manual_seed(5)
    k1 = iwae_bound(model, Batch(u, x, mask), 1)
    torch.manual_seed(5)
    trace = model(u, x, mask)
    terms = compute_terms(model, trace, comp, training=False)
    torch.testing.assert_close(k1, log_weights(trace))
    # the sampled form differs from the analytic-KL ELBO only by the KL's Monte Carlo error
    assert not torch.allclose(k1, terms.elbo)


@pytest.mark.slow
def test_iwae_bound_does_not_decrease_with_k_on_a_trained_model(toy_npz, tmp_path):
    data = NpzDataset(toy_npz, None)
    comp = tiny("zforcing-noaux", "objective.kl_weight=1.0", "train.lr=3e-3", "train.log_every=50")
    result = train(comp, data, tmp_path / "run", max_steps=150, progress=False)
    bounds = [evaluate(result.model, comp, data.split("valid"), iwae_k=k).mean("iwae") for k in (1, 8, 64)]
    elbo = evaluate(result.model, comp, data.split("valid")).mean("elbo")
    assert bounds[0] <= bounds[1] <= bounds[2], bounds
    assert abs(bounds[0] - elbo) < 0.05 * abs(elbo)


def _bench(npz, out, models, *extra):
    return main(["bench", "--models", models, "--dataset", "npz", "--data", str(npz), "--max-steps", "10",
                 "--iwae-k", "4", "--seeds", "0", "--out", str(out), *SETS, *extra])  # fmt: skip


@pytest.mark.slow
def test_bench_writes_results_and_tensorboard_and_survives_a_failing_model(toy_npz, tmp_path, capsys):
    out = tmp_path / "bench"
    status = _bench(toy_npz, out, "zforcing,zforcing-noaux,no-such-model")
    captured = capsys.readouterr()
    assert status == 1
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["zforcing", "zforcing-noaux", "no-such-model"]
    for row in rows[:2]:
        assert set(row) == set(FIELDS) and row["error"] is None
        static = ("kl_static", "active_units_static")  # a model with a sequence-level latent only
        assert all(row[k] is not None for k in FIELDS if k not in ("paper", "error", *static)), row
        assert all(row[k] is None for k in static), row
        assert row["unit"] == "nats per sequence" and row["iwae_k"] == 4 and row["steps"] == 10
        assert row["iwae"] >= row["elbo"] - 0.1 * abs(row["elbo"])
    assert rows[0]["aux"] != 0.0 and rows[1]["aux"] == 0.0  # noaux reports no aux cost
    assert "unknown model 'no-such-model'" in rows[2]["error"]
    with (out / "results.csv").open() as handle:
        assert [r["model"] for r in csv.DictReader(handle)] == ["zforcing", "zforcing-noaux", "no-such-model"]
    table = (out / "results.md").read_text()
    assert re.search(r"\| zforcing \| npz \| [0-9a-f]{12} \| 1/1 \|", table) and "| no-such-model | npz | " in table
    assert table.splitlines()[0] in captured.out
    assert f"tensorboard --logdir {out / 'tensorboard'}" in captured.out

    events = EventAccumulator(str(out / "tensorboard" / "zforcing-npz-seed0"), size_guidance={"histograms": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/elbo", "train/kl", "train/aux", "train/kl_weight", "train/aux_weight",
                "train/grad_norm", "train/lr", "val/elbo", "val/iwae", "test/elbo", "test/iwae"):  # fmt: skip
        assert tag in tags["scalars"], tag
    assert "val/kl_per_dim" in tags["histograms"] and "samples/sample_0" in tags["images"]
    # the first log, at step 10, shows the weight its update (the 10th, update 9) trained with
    assert events.Scalars("train/kl_weight")[0].value == pytest.approx(0.2 + 9 * 5e-5)


@pytest.mark.slow
def test_bench_again_skips_finished_runs_and_resumes_unfinished_ones(toy_npz, tmp_path, capsys):
    out = tmp_path / "bench"
    assert _bench(toy_npz, out, "zforcing-noaux") == 0
    run = out / "runs" / "zforcing-noaux-npz-seed0"
    log_before = (run / "train_log.jsonl").read_text()
    assert _bench(toy_npz, out, "zforcing-noaux") == 0
    assert (run / "train_log.jsonl").read_text() == log_before  # skipped
    (run / "result.json").unlink()  # as if killed after its last checkpoint
    assert _bench(toy_npz, out, "zforcing-noaux", "--max-steps", "15") == 0
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [10, 15]
    assert json.loads((out / "results.json").read_text())[0]["steps"] == 15


@pytest.mark.slow
def test_a_rerun_with_another_budget_or_evaluation_is_never_the_stale_row(toy_npz, tmp_path):
    out = tmp_path / "bench"
    assert _bench(toy_npz, out, "zforcing-noaux") == 0
    assert _bench(toy_npz, out, "zforcing-noaux", "--max-steps", "15") == 0  # resumed to the new budget
    row = json.loads((out / "results.json").read_text())[0]
    assert row["steps"] == 15 and row["iwae_k"] == 4
    assert _bench(toy_npz, out, "zforcing-noaux", "--max-steps", "15", "--iwae-k", "2") == 0
    assert json.loads((out / "results.json").read_text())[0]["iwae_k"] == 2


def test_eval_prints_the_metrics_of_one_checkpoint_as_json(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    train_args = ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(toy_npz), "--out", str(out),
                  "--max-steps", "3", *SETS, "--set", "model.aux.reconstruction.hidden=5"]  # fmt: skip
    assert main(train_args) == 0
    capsys.readouterr()
    checkpoint = str(out / "checkpoints" / "last.pt")
    assert main(["eval", checkpoint, "--dataset", "npz", "--data", str(toy_npz), "--iwae-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["unit"] == "nats per sequence" and result["iwae_k"] == 3 and result["sequences"] == 64
    assert {"elbo", "iwae", "kl", "recon", "aux", "active_units"} <= set(result)
    again = main(["eval", checkpoint, "--dataset", "npz", "--data", str(toy_npz), "--iwae-k", "3", "--json"])
    assert again == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["elbo"] == result["elbo"]


def _run_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("bench ")]


@pytest.mark.slow
def test_off_a_terminal_bench_says_when_each_run_starts_and_how_it_ended(toy_npz, tmp_path, capsys, monkeypatch):
    import seqvae.bench

    printed_before_training = []
    real_train = seqvae.bench.train

    def spy(*args, **kwargs):  # what stdout held when training began
        printed_before_training.append(capsys.readouterr().out)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(seqvae.bench, "train", spy)
    out = tmp_path / "bench"
    assert _bench(toy_npz, out, "zforcing-noaux,no-such-model") == 1  # capsys: stdout is no terminal
    after = capsys.readouterr().out
    started = "bench 1/2 zforcing-noaux seed 0: training on npz, up to 10 steps"
    assert _run_lines(printed_before_training[0]) == [started]
    row = json.loads((out / "results.json").read_text())[0]
    ended, failed = _run_lines(after)
    assert ended == (
        f"bench 1/2 zforcing-noaux seed 0: 10 steps in {row['train_seconds']:.1f} s (test {row['eval_seconds']:.1f} s), "
        f"test ELBO {row['elbo']:.4g} nats per sequence, IWAE (K=4) {row['iwae']:.4g}"
    )
    assert failed.startswith("bench 2/2 no-such-model seed 0: failed: UserError: unknown model 'no-such-model'")
    assert _bench(toy_npz, out, "zforcing-noaux") == 0  # a finished run is named as such
    lines = _run_lines(capsys.readouterr().out)
    result = out / "runs" / "zforcing-noaux-npz-seed0" / "result.json"
    assert lines[0] == f"bench 1/1 zforcing-noaux seed 0: finished by an earlier run ({result})"
    assert lines[1].startswith("bench 1/1 zforcing-noaux seed 0: 10 steps in ") and len(lines) == 2


def test_on_a_terminal_bench_leaves_the_progress_to_the_bars(toy_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert _bench(toy_npz, tmp_path / "bench", "zforcing-noaux") == 0
    assert _run_lines(capsys.readouterr().out) == []


@pytest.mark.slow
def test_a_bench_run_whose_folder_is_in_use_is_refused_before_it_writes_anything(toy_npz, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "bench"
    run_dir = out / "runs" / "zforcing-noaux-npz-seed0"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from seqvae.run_lock import RunLock\n"
        f"with RunLock({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        assert _bench(toy_npz, out, "zforcing-noaux") == 1
        row = json.loads((out / "results.json").read_text())[0]
        assert "in use by another seqvae process" in row["error"] and str(holder.pid) in row["error"]
        assert not (out / "tensorboard" / "zforcing-noaux-npz-seed0").exists()  # no writer, no purge
        assert time.perf_counter() - started < 30
    finally:
        holder.kill()
        holder.wait()
