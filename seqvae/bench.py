"""``seqvae bench``: train, select, evaluate and compare compositions side by side.

For every model and seed: train with the data set's preset (``presets`` in registry.yaml),
keep the checkpoint with the best validation ELBO, evaluate it on the test split (ELBO and the
IWAE bound in the data set's unit), log to TensorBoard, and write one row. A failing run gets
its error in its row; the others still run. Finished runs are skipped when the same command
runs again on the same ``--out``; unfinished ones resume from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqvae.checkpoint import atomic_write_text, load_checkpoint
from seqvae.composition import Composition, published_numbers
from seqvae.data import Dataset
from seqvae.evaluate import Evaluation, evaluate
from seqvae.model import SequenceModel
from seqvae.resolve import paper_number, preset_overrides, resolve_composition
from seqvae.results import FIELDS, checked, dumps, write_results
from seqvae.samples import write_samples
from seqvae.train import Budget, train

RESULT_FILE = "result.json"
__all__ = ["BenchPlan", "composition_for", "preset_overrides", "finished_row", "run_bench", "run_guarded", "run_one"]


@dataclass
class BenchPlan:
    models: list[str]
    dataset_name: str
    dataset: Dataset
    out: Path
    seeds: list[int]
    budget: Budget
    preset: str | None = None
    iwae_k: int = 64
    device: str = "cpu"
    overrides: tuple[str, ...] = ()
    progress: bool | None = None
    """tqdm bars while training (None: on a terminal)."""
    lines: bool | None = None
    """One line on stdout as each run starts and ends (None: when stdout is not a terminal,
    where the bars are off, so that a log still shows how far the bench got)."""


def run_name(model: str, dataset: str, seed: int) -> str:
    return f"{Path(model).stem}-{dataset}-seed{seed}"


def composition_for(plan: BenchPlan, model: str) -> Composition:
    return resolve_composition(model, plan.dataset, plan.dataset_name, plan.preset, plan.overrides)


def _silent(text: str) -> None:
    pass


def run_one(plan: BenchPlan, model: str, seed: int, say: Callable[[str], None] = _silent) -> dict[str, Any]:
    """Train and evaluate one model and seed; exceptions propagate to the caller. ``say``
    hears what the run does before it starts (kept from an earlier run, resumed, trained)."""
    name = run_name(model, plan.dataset_name, seed)
    run_dir = plan.out / "runs" / name
    comp = composition_for(plan, model)
    done = run_dir / RESULT_FILE
    previous = finished_row(plan, model, seed, comp)
    if previous is not None:
        say(f"finished by an earlier run ({done})")
        return previous
    resumed = (run_dir / "checkpoints" / "last.pt").exists()
    say(f"{'resuming' if resumed else 'training'} on {plan.dataset_name}, {budget_text(plan.budget)}")
    from torch.utils.tensorboard import SummaryWriter

    from seqvae.run_lock import RunLock
    from seqvae.train import resume_step

    # the lock covers the writer and the result too: a second bench on this folder is refused
    # before its writer could purge the running one's TensorBoard steps
    with RunLock(run_dir):
        # a resumed run writes the steps after its checkpoint again: TensorBoard hides the old ones
        writer = SummaryWriter(str(plan.out / "tensorboard" / name), purge_step=resume_step(run_dir))
        try:
            result = train(comp, plan.dataset, run_dir, seed=seed, device=plan.device, progress=plan.progress,
                           budget=plan.budget, writer=writer)  # fmt: skip
            best = load_checkpoint(result.best_checkpoint, map_location=plan.device)
            model_ = result.model
            model_.load_state_dict(best["model"])
            started = time.perf_counter()
            test = evaluate(model_, comp, plan.dataset.split("test"), device=plan.device, iwae_k=plan.iwae_k)
            eval_seconds = time.perf_counter() - started
            row = make_row(plan, model, seed, comp, model_, test, result.step, result.seconds, eval_seconds)
            write_tensorboard_summary(writer, plan, comp, model_, row, result.step)
        finally:
            writer.close()
        atomic_write_text(done, dumps({"identity": run_identity(plan, comp), "row": row}, indent=1))
    return row


def finished_row(plan: BenchPlan, model: str, seed: int, comp: Composition | None = None) -> dict[str, Any] | None:
    """The row of an earlier run of exactly this run (``result.json``), or None. A finished run
    is reused only when everything that defines its row is the same, and it had no error."""
    done = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / RESULT_FILE
    if not done.exists():
        return None
    previous = json.loads(done.read_text())
    comp = comp or composition_for(plan, model)
    if previous.get("identity") == run_identity(plan, comp) and previous["row"].get("error") is None:
        return previous["row"]
    return None


def run_identity(plan: BenchPlan, comp: Composition) -> dict[str, Any]:
    """What defines a run's row: the resolved composition, the data, the budget, the evaluation."""
    return {"composition": comp.to_dict(), "data": plan.dataset.fingerprint,
            "budget": dataclasses.asdict(plan.budget), "iwae_k": plan.iwae_k}  # fmt: skip


def make_row(
    plan: BenchPlan, model: str, seed: int, comp: Composition, net: SequenceModel, ev: Evaluation,
    steps: int, train_seconds: float, eval_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    row = dict.fromkeys(FIELDS)
    row.update(
        model=Path(model).stem, dataset=plan.dataset_name, seed=seed, split="test",
        **ev.report(plan.dataset.unit),
        steps=steps, train_seconds=round(train_seconds, 2), eval_seconds=round(eval_seconds, 2),
        params=sum(p.numel() for p in net.parameters()),
        **data_fields(plan.dataset),
        paper=paper_number(published_numbers(), plan.dataset_name, plan.dataset, model),
        error=None,
    )  # fmt: skip
    return checked(row, "test evaluation")  # a NaN bound is the run's error, never a number


def data_fields(dataset: Dataset) -> dict[str, Any]:
    """What a row was measured on: the test split's sequences and predicted steps, and the
    fingerprint of the data's content (``Dataset.fingerprint``)."""
    test = dataset.split("test")
    return {"test_sequences": len(test), "test_steps": test.steps, "data": dataset.fingerprint}


def write_tensorboard_summary(writer, plan: BenchPlan, comp: Composition, net: SequenceModel,
                              row: dict[str, Any], step: int) -> None:  # fmt: skip
    """hparams with the final test metrics in the run itself, and samples from the model."""
    hparams = {"model": row["model"], "dataset": row["dataset"], "seed": row["seed"],
               "lr": comp.train.lr, "batch_size": comp.train.batch_size, "latent_dim": comp.latent_dim}  # fmt: skip
    keys = ("elbo", "iwae", "kl", "recon", "active_units", "kl_static", "kl_per_step", "active_units_static")
    metrics = {f"test/{k}": float(row[k]) for k in keys if row[k] is not None}
    writer.add_hparams(hparams, metrics, run_name=".")
    steps = min(100, max(plan.dataset.split("test").batch(torch.arange(1)).x.shape[0], 16))
    samples = net.sample(4, steps, device=plan.device).transpose(0, 1).cpu()
    write_samples(writer, plan.dataset, "samples", samples, step)


def error_row(plan: BenchPlan, model: str, seed: int, error: BaseException) -> dict[str, Any]:
    row = dict.fromkeys(FIELDS)
    row.update(model=Path(model).stem, dataset=plan.dataset_name, seed=seed, split="test",
               unit=plan.dataset.unit, error=f"{type(error).__name__}: {error}")  # fmt: skip
    try:
        row.update(data_fields(plan.dataset))
    except Exception:  # noqa: BLE001 -- the row keeps the run's own error
        pass
    return row


def _announcer(tag: str) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(f"{tag}: {text}", flush=True)  # flushed: stdout is block-buffered in a file or pipe

    return say


def _count(number: float, unit: str) -> str:
    text = f"{number:g}" if isinstance(number, float) else str(number)  # 2.5 epochs, 1000000 steps
    return f"{text} {unit}" if number == 1 else f"{text} {unit}s"


def budget_text(budget: Budget) -> str:
    """The budget as the command line gave it, e.g. "up to 300 steps"."""
    limits = (("step", budget.max_steps), ("epoch", budget.epochs), ("minute", budget.minutes))
    return "up to " + " or ".join(_count(value, unit) for unit, value in limits if value is not None)


def outcome_text(row: dict[str, Any]) -> str:
    """How a run ended, from its row: steps, seconds and the test bounds in the data's unit."""
    if row["error"]:
        return f"failed: {row['error']}"
    iwae = f", IWAE (K={row['iwae_k']}) {row['iwae']:.4g}" if row["iwae"] is not None else ""
    return (f"{_count(row['steps'], 'step')} in {row['train_seconds']:.1f} s (test {row['eval_seconds']:.1f} s), "
            f"test ELBO {row['elbo']:.4g} {row['unit']}{iwae}")  # fmt: skip


def plan_runs(plan: BenchPlan) -> list[tuple[str, int]]:
    """The (model, seed) runs of a plan, in the order of its result rows."""
    return [(model, seed) for model in plan.models for seed in plan.seeds]


def announcer(plan: BenchPlan, number: int, model: str, seed: int, total: int | None = None) -> Callable[[str], None]:
    """What run ``number`` of ``total`` (the plan's runs) says as it starts and ends (nothing on
    a terminal)."""
    lines = plan.lines if plan.lines is not None else not sys.stdout.isatty()
    tag = f"bench {number}/{total or len(plan_runs(plan))} {Path(model).stem} seed {seed}"
    return _announcer(tag) if lines else _silent


def run_guarded(plan: BenchPlan, model: str, seed: int, say: Callable[[str], None] = _silent) -> dict[str, Any]:
    """:func:`run_one`, with a failure as the row's error (its traceback in the run's
    ``error.log``), so that the other runs go on."""
    try:
        row = run_one(plan, model, seed, say)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 -- recorded in the row, others go on
        log = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / "error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        row = error_row(plan, model, seed, error)
    say(outcome_text(row))
    return row


def run_bench(plan: BenchPlan) -> list[dict[str, Any]]:
    """All runs of the plan, one after the other; returns the rows (errors included) and writes
    the result files after each run. ``seqvae bench --jobs N`` runs them in N processes
    (:mod:`seqvae.bench_jobs`) and writes the same files."""
    rows = []
    for number, (model, seed) in enumerate(plan_runs(plan), 1):
        rows.append(run_guarded(plan, model, seed, announcer(plan, number, model, seed)))
        write_results(plan.out, rows)
    return rows
