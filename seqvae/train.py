"""The training loop: Adam, gradient-norm clipping, schedules, validation, checkpoints, logs.

A run directory holds ``config.yaml`` (the resolved composition), ``train_log.jsonl``,
``checkpoints/last.pt`` (written at every validation and at the end) and ``checkpoints/best.pt``
(the best validation ELBO so far). Started again on the same directory, a run resumes from
``last.pt`` exactly where it was taken (:mod:`seqvae.run_state`): killed at any moment and
started again with the same command, it ends as if never interrupted, and the log lines written
after that checkpoint are dropped, since the run writes them again. One process trains in a
folder at a time (:mod:`seqvae.run_lock`).

An update with a non-finite loss or gradient norm is skipped and counted (``skipped_steps`` in
the log); ``train.max_consecutive_skips`` in a row stop the run. Checkpoints are written only
from finite weights.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqvae import distributed
from seqvae.checkpoint import atomic_write_text, load_checkpoint, remove_stale_temporaries, save_checkpoint
from seqvae.composition import Composition, build_model
from seqvae.composition import validate as validate_composition
from seqvae.data import Dataset
from seqvae.errors import UserError
from seqvae.evaluate import Evaluation, evaluate
from seqvae.model import SequenceModel
from seqvae.objective import BatchObjective, weights_at
from seqvae.registry import default_registry
from seqvae.run_lock import RunLock
from seqvae.run_state import RunState, truncate_log
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


class TrainingStopped(UserError):
    """The run cannot go on: its updates keep giving non-finite losses or weights."""


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
    report = ev.report(unit)
    out["elbo_in_unit"], out["kl_per_step"] = report["elbo"], report["kl_per_step"]
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
    ``val/``, and the KL per latent dimension as a histogram at each validation. A writer of a
    resumed run should be made with ``purge_step=resume_step(out_dir)``: the steps after the
    checkpoint are written again.
    """
    budget = budget or Budget(max_steps=max_steps)
    budget.validate()
    out_dir = Path(out_dir)
    if len(dataset.split("train")) == 0:
        raise UserError(f"{dataset.path}: the train split is empty")
    w = distributed.world()
    device = distributed.start(w, device)
    finished = False
    try:  # rank 0 writes the folder; the other ranks of a data-parallel run only read it
        with RunLock(out_dir) if w.main else nullcontext():  # one process per run folder
            result = _train(comp, dataset, out_dir, seed, device, progress, budget, writer, resume, w)
        finished = True
        return result
    finally:
        distributed.stop(w, finished)


def resume_step(out_dir: str | Path) -> int | None:
    """The first update a run resumed in ``out_dir`` logs (its last checkpoint's step + 1), or
    None when there is nothing to resume. For TensorBoard's ``purge_step``."""
    last = Path(out_dir) / "checkpoints" / "last.pt"
    return load_checkpoint(last)["step"] + 1 if last.exists() else None


def adam(params, lr: float, eps: float) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernels where they exist (CPU and CUDA floating-point weights):
    the same update as the default multi-tensor one, up to rounding, in one kernel per step
    (1.0 M weights in 51 tensors, benchmarks/README.md: 0.55 ms a step instead of 2.5 ms)."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True if fused else None)


def _train(comp, dataset, out_dir, seed, device, progress, budget, writer, resume, w) -> TrainResult:
    train_split, valid_split = dataset.split("train"), dataset.split("valid")
    cfg = comp.train
    steps_per_epoch = max(1, math.ceil(len(train_split) / cfg.batch_size))
    eval_every = cfg.eval_every * (steps_per_epoch if cfg.eval_per == "epoch" else 1)
    set_seed(seed)
    model = build_model(comp, train_split.x_dim).to(device)
    model.compile_step = cfg.compile
    optimizer = adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    state = RunState(model, optimizer, torch.Generator().manual_seed(seed), one_device=w.parallel)
    checkpoints = out_dir / "checkpoints"
    last_path, best_path = checkpoints / "last.pt", checkpoints / "best.pt"
    for folder in (out_dir, checkpoints) if w.main else ():  # what a killed process was writing
        remove_stale_temporaries(folder)  # (we hold the lock)

    config = comp.to_dict()
    saved_step = None  # the step of this run's last.pt
    if resume and last_path.exists():
        saved = load_checkpoint(last_path, map_location=device)
        if not _same_composition(saved["composition"], config):
            raise UserError(
                f"{last_path}: this folder holds a run of a different composition; "
                "use another --out or delete the folder"
            )
        state.load_state_dict(saved)
        saved_step = state.step
    elif w.main:  # a best.pt without last.pt is a killed attempt's, from before its first last.pt
        best_path.unlink(missing_ok=True)
    if w.main:
        for name in ("train_log.jsonl", "val_log.jsonl"):  # the run writes the later lines again
            truncate_log(out_dir / name, state.step)
        atomic_write_text(out_dir / "config.yaml", dump_yaml(config))
    objective = distributed.wrap(BatchObjective(model, comp), w, device)  # DDP in a data-parallel run
    dtype = next(model.parameters()).dtype

    def kept() -> str:
        return "no checkpoint was written yet" if saved_step is None else \
            f"the last good checkpoint is {last_path} (update {saved_step})"  # fmt: skip

    def checkpoint(path: Path) -> None:
        nonlocal saved_step
        if not state.finite():  # a bad step never reaches a checkpoint
            raise TrainingStopped(f"{out_dir}: the weights are not finite after update {state.step}, so {path.name} "
                                  f"was not written; {kept()}; lower train.lr or set train.clip")  # fmt: skip
        save_checkpoint(path, {"name": comp.name, "composition": config, "x_dim": train_split.x_dim, "seed": seed,
                               **state.state_dict()})  # fmt: skip
        saved_step = state.step if path == last_path else saved_step

    def validate() -> None:
        step = state.step
        if len(valid_split) == 0:
            state.best = {"elbo": math.nan, "step": step}
            checkpoint(best_path)
            return
        ev = evaluate(model, comp, valid_split, device=device, iwae_k=cfg.val_iwae_k, sync=False)  # rank 0 alone
        summary = _summary(ev, dataset.unit)
        # validation curves in the data set's unit, for reports (seqvae bench, benchmarks/)
        line = {"step": step, "epoch": step / steps_per_epoch, "elbo_in_unit": summary["elbo_in_unit"],
                "elbo": summary["elbo"], "kl": summary.get("kl"), "active_units": summary["active_units"]}
        with (out_dir / "val_log.jsonl").open("a") as val_log:
            val_log.write(json.dumps(line) + "\n")
        if writer is not None:
            writer.add_scalar("val/elbo", summary["elbo"], step)
            for key in ("iwae", "kl_static"):
                if key in summary:
                    writer.add_scalar(f"val/{key}", summary[key], step)
            if "kl_static" in summary:  # the dynamic latent's KL per step beside the static one's
                writer.add_scalar("val/kl_per_step", summary["kl_per_step"], step)
            if ev.kl_per_dim.numel():
                writer.add_histogram("val/kl_per_dim", ev.kl_per_dim, step)
        if summary["elbo"] > state.best["elbo"] or not best_path.exists():
            state.best = {**summary, "step": step}
            checkpoint(best_path)

    def skip(loss: float, grad_norm: float) -> None:
        """A non-finite loss or gradient norm: no update, the gradients dropped, counted."""
        optimizer.zero_grad(set_to_none=True)
        state.skipped_steps += 1
        state.consecutive_skips += 1
        if state.consecutive_skips >= cfg.max_consecutive_skips:
            raise TrainingStopped(
                f"{out_dir}: training stopped at update {state.step + 1}: {state.consecutive_skips} updates in a row "
                f"had a non-finite loss or gradient norm (the last: loss {loss:g}, gradient norm {grad_norm:g}; "
                f"train.max_consecutive_skips is {cfg.max_consecutive_skips}); {kept()}; "
                "lower train.lr or set train.clip"
            )  # fmt: skip

    start = time.perf_counter() - state.train_seconds

    def done() -> bool:
        finished = budget.done(state.step, steps_per_epoch, time.perf_counter() - start)
        if w.parallel and budget.minutes is not None:  # clocks differ: stop when any rank's is up
            finished = not distributed.agree(not finished, w, device)
        return finished

    loss_value = math.nan
    bar = tqdm(total=budget.total(steps_per_epoch), initial=state.step, desc=comp.name, unit="step",
               disable=True if not w.main else None if progress is None else not progress,  # None: on a tty
               dynamic_ncols=True)  # fmt: skip
    model.train()
    with (out_dir / "train_log.jsonl").open("a") if w.main else nullcontext() as log:
        while not done():
            batches = train_split.batches(cfg.batch_size, shuffle=True, generator=state.shuffle, bucket=cfg.bucket,
                                          skip=state.batch, shard=w.shard)  # fmt: skip
            for batch in batches:
                if done():
                    break
                state.batch += 1  # consumed, whether it makes an update or is skipped
                share = distributed.share(batch)  # of the global batch: 1 in a single process
                batch = distributed.fill_empty(batch.to(device))
                at = progress_at(state.step, steps_per_epoch)
                for group in optimizer.param_groups:  # the rate follows from the update: resumable
                    group["lr"] = cfg.lr * cfg.lr_decay.at(at)
                terms = objective(batch.u, batch.x, batch.mask, distributed.shard_noise(model, batch, dtype), at)
                optimizer.zero_grad(set_to_none=True)
                # the global batch's mean loss (every rank takes the same branch below)
                loss_value, grad_norm = distributed.total(terms.loss.item() * share, w, device), math.nan
                if math.isfinite(loss_value):
                    # DDP averages the ranks' gradients: each weighs its mean by its share
                    (terms.loss * (share * w.size) if w.parallel else terms.loss).backward()
                    clip = cfg.clip if cfg.clip > 0 else math.inf
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                if not math.isfinite(grad_norm):  # NaN too when the loss was not finite
                    skip(loss_value, grad_norm)
                    continue
                state.consecutive_skips = 0
                optimizer.step()
                state.step += 1
                state.train_seconds = time.perf_counter() - start
                bar.update(1)
                finished = done()
                if state.step % cfg.log_every == 0 or finished:
                    means = distributed.totals({k: v * share for k, v in _term_means(terms).items()}, w, device)
                    if w.main:
                        record = _record(comp, means, at, loss_value, grad_norm, optimizer, state)
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        bar.set_postfix(loss=f"{loss_value:.4g}", elbo=f"{record['elbo']:.4g}")
                        if writer is not None:
                            for key, value in record.items():
                                if key not in ("step", "seconds"):
                                    writer.add_scalar(f"train/{key}", value, state.step)
                if eval_every and state.step % eval_every == 0 and not finished and w.main:
                    validate()
                    checkpoint(last_path)
            else:  # the pass ended (not the budget)
                state.next_epoch()
    bar.close()
    if w.main:
        if state.best.get("step") != state.step:
            validate()
        checkpoint(last_path)
    valid = {k: v for k, v in state.best.items() if k != "step"}
    return TrainResult(model, state.step, loss_value, state.train_seconds, last_path, best_path, valid)


def _same_composition(stored: dict, config: dict) -> bool:
    """Whether a checkpoint's composition is ``config``, options added since it was written
    taking their defaults."""
    if stored == config:
        return True
    try:
        return validate_composition(stored, default_registry(), source="checkpoint").to_dict() == config
    except UserError:
        return False


def _term_means(terms) -> dict[str, float]:
    """A batch's mean ELBO, KL and auxiliary costs (``aux/KEY``), for the log."""
    static = {} if terms.kl_static is None else {"kl_static": terms.kl_static.detach().mean().item()}
    return {"elbo": terms.elbo.detach().mean().item(), "kl": terms.kl.detach().mean().item(), **static,
            **{f"aux/{k}": -v.detach().mean().item() for k, v in terms.aux.items()}}  # fmt: skip


def _record(comp, means, at, loss, grad_norm, optimizer, state: RunState) -> dict[str, float]:
    """One line of train_log.jsonl; ``at`` is the Progress the update was computed at and
    ``means`` the batch's :func:`_term_means` (the global batch's, in a data-parallel run)."""
    aux = {k: v for k, v in means.items() if k.startswith("aux/")}
    weights = weights_at(comp, at)
    step = at.update + 1
    aux_weights = [v for k, v in weights.items() if k.startswith("aux_weight/")]
    return {
        "step": step, "epoch": at.epoch, "loss": loss, "elbo": means["elbo"],
        "kl": means["kl"], **({"kl_static": means["kl_static"]} if "kl_static" in means else {}),
        "aux": sum(aux.values()) if aux else 0.0,
        **aux, "kl_weight": weights["kl_weight"], "aux_weight": aux_weights[0] if aux_weights else 0.0,
        **weights, "grad_norm": grad_norm, "lr": optimizer.param_groups[0]["lr"],
        "skipped_steps": state.skipped_steps, "seconds": state.train_seconds,
    }  # fmt: skip
