"""The training loop: Adam, gradient-norm clipping, schedules, validation, checkpoints, logs.

A run directory holds ``config.yaml`` (the resolved composition), ``train_log.jsonl``,
``checkpoints/last.pt`` (written at every validation and at the end) and ``checkpoints/best.pt``
(the best validation ELBO so far). Started again on the same directory, a run resumes from
``last.pt``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqvae.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from seqvae.composition import Composition, build_model
from seqvae.data import Dataset
from seqvae.errors import UserError
from seqvae.evaluate import Evaluation, evaluate
from seqvae.model import SequenceModel
from seqvae.objective import compute_terms, weights_at
from seqvae.schedules import progress as progress_at
from seqvae.yamlio import dump_yaml


@dataclass
class Budget:
    """When to stop: the first limit reached (at least one must be set)."""

    max_steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None

    def validate(self) -> None:
        if self.max_steps is None and self.epochs is None and self.minutes is None:
            raise UserError("give a training budget: --max-steps, --epochs or --time-budget")
        limits = (("--max-steps", self.max_steps), ("--epochs", self.epochs), ("--time-budget", self.minutes))
        for name, value in limits:
            if value is not None and value <= 0:
                raise UserError(f"{name}: expected a positive number, got {value}")

    def done(self, step: int, steps_per_epoch: int, seconds: float) -> bool:
        return (
            (self.max_steps is not None and step >= self.max_steps)
            or (self.epochs is not None and step >= self.epochs * steps_per_epoch)
            or (self.minutes is not None and seconds >= 60.0 * self.minutes)
        )

    def total(self, steps_per_epoch: int) -> int | None:
        limits = [s for s in (self.max_steps, self.epochs and math.ceil(self.epochs * steps_per_epoch)) if s]
        return min(limits) if limits else None


@dataclass
class TrainResult:
    model: SequenceModel
    step: int
    last_loss: float
    seconds: float
    checkpoint: Path
    best_checkpoint: Path
    valid: dict[str, float] = field(default_factory=dict)
    """Per-sequence validation means at the best checkpoint (empty without a valid split)."""


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _summary(ev: Evaluation, unit: str) -> dict[str, float]:
    """Per-sequence means (for model selection), and the ELBO in the data set's unit."""
    out = {key: ev.mean(key) for key in ev.sums}
    out["active_units"] = float(ev.active_units)
    out["elbo_in_unit"] = ev.report(unit)["elbo"]
    return out


def train(
    comp: Composition,
    dataset: Dataset,
    out_dir: str | Path,
    max_steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
    budget: Budget | None = None,
    writer: Any = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``comp`` on the data set's train split until the budget is spent.

    ``writer`` is an optional TensorBoard ``SummaryWriter``; scalars go under ``train/`` and
    ``val/``, and the KL per latent dimension as a histogram at each validation.
    """
    budget = budget or Budget(max_steps=max_steps)
    budget.validate()
    out_dir = Path(out_dir)
    train_split, valid_split = dataset.split("train"), dataset.split("valid")
    if len(train_split) == 0:
        raise UserError(f"{dataset.path}: the train split is empty")
    cfg = comp.train
    steps_per_epoch = max(1, math.ceil(len(train_split) / cfg.batch_size))
    eval_every = cfg.eval_every * (steps_per_epoch if cfg.eval_per == "epoch" else 1)
    set_seed(seed)
    model = build_model(comp, train_split.x_dim).to(device)
    model.compile_step = cfg.compile
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    shuffle = torch.Generator().manual_seed(seed)
    checkpoints = out_dir / "checkpoints"
    last_path, best_path = checkpoints / "last.pt", checkpoints / "best.pt"
    step, spent, best = 0, 0.0, {"elbo": -math.inf}

    config = comp.to_dict()
    if resume and last_path.exists():
        state = load_checkpoint(last_path, map_location=device)
        if state.get("composition") != config:
            raise UserError(
                f"{last_path}: this folder holds a run of a different composition; "
                "use another --out or delete the folder"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, spent = state["step"], state.get("train_seconds", 0.0)
        best = state.get("best_valid") or best
        # RNG states are CPU byte tensors, whatever map_location moved the rest to
        torch.set_rng_state(state["rng"].cpu())
        shuffle.set_state(state["shuffle_rng"].cpu())
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", dump_yaml(config))

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, {
            "name": comp.name, "composition": config, "x_dim": train_split.x_dim,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "seed": seed, "train_seconds": spent, "best_valid": best,
            "rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(),
        })  # fmt: skip

    def validate() -> None:
        nonlocal best
        if len(valid_split) == 0:
            best = {"elbo": math.nan, "step": step}
            checkpoint(best_path)
            return
        ev = evaluate(model, comp, valid_split, device=device, iwae_k=cfg.val_iwae_k)
        summary = _summary(ev, dataset.unit)
        # validation curves in the data set's unit, for reports (seqvae bench, benchmarks/)
        line = {"step": step, "epoch": step / steps_per_epoch, "elbo_in_unit": summary["elbo_in_unit"],
                "elbo": summary["elbo"], "kl": summary.get("kl"), "active_units": summary["active_units"]}
        with (out_dir / "val_log.jsonl").open("a") as val_log:
            val_log.write(json.dumps(line) + "\n")
        if writer is not None:
            writer.add_scalar("val/elbo", summary["elbo"], step)
            if "iwae" in summary:
                writer.add_scalar("val/iwae", summary["iwae"], step)
            if ev.kl_per_dim.numel():
                writer.add_histogram("val/kl_per_dim", ev.kl_per_dim, step)
        if summary["elbo"] > best["elbo"] or not best_path.exists():
            best = {**summary, "step": step}
            checkpoint(best_path)

    start = time.perf_counter() - spent
    loss_value = math.nan
    bar = tqdm(total=budget.total(steps_per_epoch), initial=step, desc=comp.name, unit="step",
               disable=None if progress is None else not progress, dynamic_ncols=True)  # fmt: skip
    model.train()
    with (out_dir / "train_log.jsonl").open("a") as log:
        while not budget.done(step, steps_per_epoch, time.perf_counter() - start):
            for batch in train_split.batches(cfg.batch_size, shuffle=True, generator=shuffle, bucket=cfg.bucket):
                if budget.done(step, steps_per_epoch, time.perf_counter() - start):
                    break
                batch = batch.to(device)
                at = progress_at(step, steps_per_epoch)
                for group in optimizer.param_groups:  # the rate follows from the update: resumable
                    group["lr"] = cfg.lr * cfg.lr_decay.at(at)
                trace = model(batch.u, batch.x, batch.mask)
                terms = compute_terms(model, trace, comp, update=at)
                del trace  # what backward needs, autograd holds; the rest is freed before it
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                clip = cfg.clip if cfg.clip > 0 else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                loss_value = terms.loss.item()
                if not math.isfinite(loss_value):
                    kept = f"the last good checkpoint is {last_path}" if last_path.exists() else "no checkpoint yet"
                    raise FloatingPointError(f"training loss became {loss_value} at update {step}; {kept}")
                optimizer.step()
                step += 1
                spent = time.perf_counter() - start
                bar.update(1)
                finished = budget.done(step, steps_per_epoch, spent)
                if step % cfg.log_every == 0 or finished:
                    record = _record(comp, terms, at, loss_value, grad_norm, optimizer, spent)
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{loss_value:.4g}", elbo=f"{record['elbo']:.4g}")
                    if writer is not None:
                        for key, value in record.items():
                            if key not in ("step", "seconds"):
                                writer.add_scalar(f"train/{key}", value, step)
                if eval_every and step % eval_every == 0 and not finished:
                    validate()
                    checkpoint(last_path)
    bar.close()
    if best.get("step") != step:
        validate()
    checkpoint(last_path)
    valid = {k: v for k, v in best.items() if k != "step"}
    return TrainResult(model, step, loss_value, spent, last_path, best_path, valid)


def _record(comp, terms, at, loss, grad_norm, optimizer, seconds) -> dict[str, float]:
    """One line of train_log.jsonl; ``at`` is the Progress the update was computed at."""
    aux = {f"aux/{k}": -v.detach().mean().item() for k, v in terms.aux.items()}
    weights = weights_at(comp, at)
    step = at.update + 1
    aux_weights = [v for k, v in weights.items() if k.startswith("aux_weight/")]
    return {
        "step": step, "epoch": at.epoch, "loss": loss, "elbo": terms.elbo.detach().mean().item(),
        "kl": terms.kl.detach().mean().item(), "aux": sum(aux.values()) if aux else 0.0,
        **aux, "kl_weight": weights["kl_weight"], "aux_weight": aux_weights[0] if aux_weights else 0.0,
        **weights, "grad_norm": grad_norm, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
    }  # fmt: skip
