"""Evaluation: the ELBO (beta = 1, no auxiliary terms), the IWAE bound, and diagnostics.

Totals are aggregated with torchmetrics (sums, synchronised across processes under DDP); the
caller turns them into a data set's unit with :func:`seqvae.data.in_unit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchmetrics import Metric

from seqvae.composition import Composition
from seqvae.data import Batch, Split, in_unit
from seqvae.model import SequenceModel, Trace
from seqvae.objective import compute_terms

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent dimension is active when Cov_x(E_q[z_d]) exceeds this (Burda et al. 2016)."""


class Total(Metric):
    """A running sum of a fixed-shape tensor, summed across processes."""

    full_state_update = False

    def __init__(self, shape: tuple[int, ...] = (), sync: bool = True) -> None:
        super().__init__(sync_on_compute=sync)
        self.add_state("total", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor) -> None:
        self.total += value.detach().to(self.total.dtype)

    def compute(self) -> Tensor:
        return self.total


@dataclass
class Evaluation:
    """Sums over a split; ``sums`` holds per-sequence quantities summed over sequences."""

    sequences: float
    steps: float
    sums: dict[str, float]
    kl_per_dim: Tensor = field(default_factory=lambda: torch.zeros(0))
    """Mean KL per sequence for each latent dimension (Z,)."""
    active_units: int = 0
    iwae_k: int = 0
    active_units_static: int | None = None
    """Active dimensions of a sequence-level latent f (None: the model has none)."""

    def mean(self, key: str) -> float:
        """Per-sequence mean of a summed quantity."""
        return self.sums[key] / max(self.sequences, 1.0)

    def report(self, unit: str) -> dict[str, float | int | None]:
        """The bounds in a data set's ``unit``; KL, reconstruction and aux costs in nats per
        sequence (per image) or per step (music, text); ``kl_static`` per sequence and
        ``kl_per_step`` per step whatever the unit. A non-finite value is kept as it is:
        :func:`seqvae.results.checked` makes it the error of a result row."""
        per = self.sequences if unit in ("nats per sequence", "nats per image") else self.steps
        per = max(per, 1.0)
        iwae = self.sums.get("iwae")
        return {
            "elbo": in_unit(unit, self.sums["elbo"], self.sequences, self.steps),
            "iwae": None if iwae is None else in_unit(unit, iwae, self.sequences, self.steps),
            "iwae_k": self.iwae_k or None,
            "unit": unit,
            "kl": self.sums["kl"] / per,
            "recon": self.sums["recon"] / per,
            "aux": self.sums.get("aux", 0.0) / per,
            "active_units": self.active_units,
            # a sequence-level latent's KL is per sequence whatever the unit
            "kl_static": None if "kl_static" not in self.sums else self.sums["kl_static"] / max(self.sequences, 1.0),
            # the per-step latents' KL per step, whatever the unit: beside a sequence-level
            # latent's KL per sequence, what each latent costs at its own time scale
            "kl_per_step": self.sums["kl"] / max(self.steps, 1.0),
            "active_units_static": self.active_units_static,
        }


def log_weights(trace: Trace) -> Tensor:
    """log p(x, z) - log q(z | x) per sequence (B,), for the sampled z of the trace."""
    mask = trace.mask
    log_w = trace.likelihood.log_prob(trace.params, trace.x) * mask
    if trace.z is not None:  # log q: a flow posterior's own density, else the Gaussian's
        log_w = log_w + (trace.log_p() - trace.log_q()) * mask
    log_w = log_w.sum(0)
    if trace.static_z is not None:  # once per sequence
        log_w = log_w + trace.static_log_ratio()
    return log_w


def iwae_bound(model: SequenceModel, batch: Batch, k: int, chunk: int | None = None) -> Tensor:
    """log (1/K) sum_k p(x, z^k) / q(z^k | x) per sequence (B,).

    The K samples are whole trajectories, folded into the batch dimension (``chunk`` samples
    per forward pass, all K by default) and combined with logsumexp.
    """
    chunk = min(chunk or k, k)
    size = batch.x.shape[1]
    running = None
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        trace = model(batch.u.repeat(1, n, 1), batch.x.repeat(1, n, 1), batch.mask.repeat(1, n))
        part = torch.logsumexp(log_weights(trace).view(n, size), dim=0)
        running = part if running is None else torch.logaddexp(running, part)
    return running - math.log(k)


@torch.inference_mode()
def evaluate(
    model: SequenceModel,
    comp: Composition,
    split: Split,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    iwae_k: int = 0,
    max_batches: int | None = None,
    seed: int | None = 0,
    sync: bool = True,
) -> Evaluation:
    """ELBO, reconstruction, KL, auxiliary costs, active units and (``iwae_k`` > 0) the IWAE
    bound with K samples, summed over ``split`` (whole sequences with their masks).

    ``sync``: sum the totals over the processes of a process group, when one is initialised
    (each process then evaluates its own part of a split); False when one process evaluates
    the whole split alone, as rank 0 validates a data-parallel run."""
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    if seed is not None:  # the same checkpoint gives the same numbers
        torch.manual_seed(seed)
    batch_size = batch_size or comp.train.batch_size
    if iwae_k > 1:  # the K samples share the batch dimension
        batch_size = max(1, batch_size // min(iwae_k, 8))
    z_dim = model.z_dim if model.decoder.uses_latent else 0
    totals: dict[str, Total] = {}

    def add(key: str, value: Tensor, shape: tuple[int, ...] = ()) -> None:
        if key not in totals:
            totals[key] = Total(shape, sync).to(device)
        totals[key].update(value)

    for i, batch in enumerate(split.batches(batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        batch = batch.to(device)
        trace = model(batch.u, batch.x, batch.mask)
        terms = compute_terms(model, trace, comp, training=False)
        lengths = batch.mask.sum(0)
        add("sequences", torch.tensor(float(batch.x.shape[1])))
        add("steps", lengths.sum())
        add("elbo", terms.elbo.sum())
        add("elbo_per_step", (terms.elbo / lengths).sum())
        add("recon", terms.log_px.sum())
        add("kl", terms.kl.sum())
        add("aux", sum((-v).sum() for v in terms.aux.values()) if terms.aux else torch.zeros(()))
        for key, value in terms.aux.items():
            add(f"aux/{key}", (-value).sum())
        if z_dim:
            mask = batch.mask.unsqueeze(-1)
            add("kl_per_dim", terms.kl_per_dim.sum((0, 1)), (z_dim,))
            # active units read E_q[z] of the encoder's Gaussian; for a flow posterior that is
            # its base distribution's mean (the flow's output has no closed-form mean)
            add("mu_sum", (trace.post_mu * mask).sum((0, 1)), (z_dim,))
            add("mu_sq_sum", (trace.post_mu.pow(2) * mask).sum((0, 1)), (z_dim,))
        if trace.static_z is not None:
            f_dim = trace.static_z.shape[-1]
            add("kl_static", terms.kl_static.sum())
            add("f_sum", trace.static_mu.sum(0), (f_dim,))
            add("f_sq_sum", trace.static_mu.pow(2).sum(0), (f_dim,))
        if iwae_k:
            add("iwae", iwae_bound(model, batch, iwae_k).sum())

    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    values = {key: metric.compute().cpu() for key, metric in totals.items()}
    sequences = float(values.pop("sequences", 0.0))
    steps = float(values.pop("steps", 0.0))
    kl_per_dim, active = torch.zeros(0), 0
    if z_dim and steps:
        kl_per_dim = (values.pop("kl_per_dim") / max(sequences, 1.0)).float()
        mean = values.pop("mu_sum") / steps
        variance = values.pop("mu_sq_sum") / steps - mean.pow(2)
        active = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
    active_static = None
    if "f_sum" in values:  # Cov over sequences of E_q[f]
        mean = values.pop("f_sum") / max(sequences, 1.0)
        variance = values.pop("f_sq_sum") / max(sequences, 1.0) - mean.pow(2)
        active_static = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
    sums = {key: float(value) for key, value in values.items()}
    return Evaluation(sequences, steps, sums, kl_per_dim, active, iwae_k, active_static)
