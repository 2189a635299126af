"""Evaluation of a model on a split: the ELBO (beta = 1, no auxiliary terms) and its parts."""

from __future__ import annotations

import torch
from torchmetrics.aggregation import SumMetric

from seqvae.composition import Composition
from seqvae.data import Split
from seqvae.model import SequenceModel
from seqvae.objective import compute_terms


@torch.inference_mode()
def evaluate(
    model: SequenceModel,
    comp: Composition,
    split: Split,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
) -> dict[str, float]:
    """Mean per-sequence ELBO, reconstruction, KL and auxiliary terms over ``split``."""
    was_training = model.training
    model.eval()
    sums: dict[str, SumMetric] = {}

    def add(key: str, value: torch.Tensor) -> None:
        if key not in sums:
            sums[key] = SumMetric().to(device)
        sums[key].update(value)

    for i, batch in enumerate(split.batches(batch_size or comp.train.batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(device)
        trace = model(batch.u, batch.x, batch.mask)
        terms = compute_terms(model, trace, comp, training=False)
        add("sequences", torch.tensor(float(batch.x.shape[1]), device=device))
        add("steps", batch.mask.sum())
        add("elbo", terms.elbo.sum())
        add("recon", terms.log_px.sum())
        add("kl", terms.kl.sum())
        for key, value in terms.aux.items():
            add(f"aux/{key}", (-value).sum())  # reported as a cost
    model.train(was_training)
    totals = {key: float(metric.compute()) for key, metric in sums.items()}
    n = max(totals.pop("sequences", 0.0), 1.0)
    steps = totals.pop("steps", 0.0)
    out = {key: value / n for key, value in totals.items()}
    out.update(sequences=n, steps=steps)
    return out
