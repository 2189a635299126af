"""The training loop: Adam, gradient-norm clipping, schedules, validation and checkpoints."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqvae.checkpoint import atomic_write_text, save_checkpoint
from seqvae.composition import Composition, build_model
from seqvae.data import Dataset
from seqvae.errors import UserError
from seqvae.evaluate import evaluate
from seqvae.model import SequenceModel
from seqvae.objective import compute_terms, weights_at
from seqvae.yamlio import dump_yaml


@dataclass
class TrainResult:
    model: SequenceModel
    step: int
    last_loss: float
    valid: dict[str, float]
    seconds: float
    checkpoint: Path


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def train(
    comp: Composition,
    dataset: Dataset,
    out_dir: str | Path,
    max_steps: int,
    seed: int = 0,
    device: str = "cpu",
    progress: bool | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``comp`` on the data set's train split for ``max_steps`` updates.

    Writes ``out_dir/config.yaml`` (the resolved composition), ``out_dir/train_log.jsonl`` and
    ``out_dir/checkpoints/last.pt``.
    """
    out_dir = Path(out_dir)
    train_split, valid_split = dataset.split("train"), dataset.split("valid")
    if len(train_split) == 0:
        raise UserError(f"{dataset.path}: the train split is empty")
    set_seed(seed)
    model = build_model(comp, train_split.x_dim).to(device)
    cfg = comp.train
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", dump_yaml(comp.to_dict()))
    checkpoint_path = out_dir / "checkpoints" / "last.pt"
    log_path = out_dir / "train_log.jsonl"
    shuffle = torch.Generator().manual_seed(seed)

    def checkpoint(step: int, valid: dict[str, float]) -> None:
        save_checkpoint(checkpoint_path, {
            "name": comp.name, "composition": comp.to_dict(), "x_dim": train_split.x_dim,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "seed": seed, "metrics": {"valid": valid},
        })  # fmt: skip

    def validate_now(step: int) -> dict[str, float]:
        return evaluate(model, comp, valid_split, device=device) if len(valid_split) else {}

    start = time.perf_counter()
    step, loss_value, valid = 0, math.nan, {}
    bar = tqdm(total=max_steps, desc=comp.name, unit="step", disable=None if progress is None else not progress)
    model.train()
    with log_path.open("a") as log:
        while step < max_steps:
            for batch in train_split.batches(cfg.batch_size, shuffle=True, generator=shuffle):
                if step >= max_steps:
                    break
                batch = batch.to(device)
                trace = model(batch.u, batch.x, batch.mask)
                terms = compute_terms(model, trace, comp, update=step)
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                clip = cfg.clip if cfg.clip > 0 else math.inf
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                loss_value = terms.loss.item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"training loss became {loss_value} at update {step}; the last good "
                        f"checkpoint is {checkpoint_path}"
                    )
                optimizer.step()
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == max_steps:
                    record = {
                        "step": step, "loss": loss_value, "elbo": terms.elbo.detach().mean().item(),
                        "kl": terms.kl.detach().mean().item(), "grad_norm": grad_norm,
                        **{f"aux/{k}": -v.detach().mean().item() for k, v in terms.aux.items()},
                        **weights_at(comp, step), "seconds": time.perf_counter() - start,
                    }  # fmt: skip
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{loss_value:.4g}", elbo=f"{record['elbo']:.4g}")
                    if on_log:
                        on_log(record)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < max_steps:
                    valid = validate_now(step)
                    checkpoint(step, valid)
    bar.close()
    valid = validate_now(step)
    checkpoint(step, valid)
    return TrainResult(model, step, loss_value, valid, time.perf_counter() - start, checkpoint_path)
