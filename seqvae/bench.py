"""``seqvae bench``: train, select, evaluate and compare compositions side by side.

For every model and seed: train with the data set's preset (``presets`` in registry.yaml),
keep the checkpoint with the best validation ELBO, evaluate it on the test split (ELBO and the
IWAE bound in the data set's unit), log to TensorBoard, and write one row. A failing run gets
its error in its row; the others still run. Finished runs are skipped when the same command
runs again on the same ``--out``; unfinished ones resume from their last checkpoint.
"""

from __future__ import annotations

import json
import time
import traceback
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
from seqvae.results import FIELDS, write_results
from seqvae.samples import write_samples
from seqvae.train import Budget, train

RESULT_FILE = "result.json"


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


def run_name(model: str, dataset: str, seed: int) -> str:
    return f"{Path(model).stem}-{dataset}-seed{seed}"


def composition_for(plan: BenchPlan, model: str) -> Composition:
    return resolve_composition(model, plan.dataset, plan.dataset_name, plan.preset, plan.overrides)


__all__ = ["BenchPlan", "composition_for", "preset_overrides", "run_bench", "run_one"]


def run_one(plan: BenchPlan, model: str, seed: int) -> dict[str, Any]:
    """Train and evaluate one model and seed; exceptions propagate to the caller."""
    name = run_name(model, plan.dataset_name, seed)
    run_dir = plan.out / "runs" / name
    comp = composition_for(plan, model)
    done = run_dir / RESULT_FILE
    if done.exists():
        previous = json.loads(done.read_text())
        same_data = previous["row"].get("data") == plan.dataset.fingerprint
        if previous.get("composition") == comp.to_dict() and same_data and previous["row"].get("error") is None:
            return previous["row"]
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(plan.out / "tensorboard" / name))
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
    atomic_write_text(done, json.dumps({"composition": comp.to_dict(), "row": row}, indent=1))
    return row


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
    return row


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
    keys = ("elbo", "iwae", "kl", "recon", "active_units")
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


def run_bench(plan: BenchPlan) -> list[dict[str, Any]]:
    """All runs of the plan; returns the rows (errors included) and writes the result files."""
    rows = []
    for model in plan.models:
        for seed in plan.seeds:
            try:
                row = run_one(plan, model, seed)
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # noqa: BLE001 -- recorded in the row, others go on
                log = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / "error.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc())
                row = error_row(plan, model, seed, error)
            rows.append(row)
            write_results(plan.out, rows)
    return rows
