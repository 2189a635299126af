"""From an unrolled :class:`~seqvae.model.Trace` to the training loss and the reported terms.

Maximised: sum_t m_t [ log p(x_t | .) - beta KL_t + sum_k w_k aux_k,t ] - beta KL_f, where KL_f
is the KL of a sequence-level latent f (the ``static`` slot), once per sequence. The reported
ELBO uses beta = 1, no free bits and no auxiliary terms. All sums are over real steps (the mask), and
per-sequence values are averaged over the batch: nats per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqvae.composition import FREE_BITS_WITH_FLOW, Composition
from seqvae.errors import ConfigError
from seqvae.model import SequenceModel, Trace
from seqvae.schedules import Progress


@dataclass
class Terms:
    """Per-sequence terms (B,) of one batch, plus the weighted training loss (scalar)."""

    loss: Tensor
    log_px: Tensor
    kl: Tensor
    aux: dict[str, Tensor]
    kl_per_dim: Tensor
    """Masked KL per step and latent dimension (T, B, Z), for diagnostics (for a flow
    posterior, its base Gaussian's: see :meth:`seqvae.model.Trace.kl_per_dim`)."""
    kl_static: Tensor | None = None
    """KL of a sequence-level latent f per sequence (B,); ``kl`` is the per-step latents'."""

    @property
    def elbo(self) -> Tensor:
        elbo = self.log_px - self.kl
        return elbo if self.kl_static is None else elbo - self.kl_static


def compute_terms(
    model: SequenceModel,
    trace: Trace,
    comp: Composition,
    update: int | Progress = 0,
    training: bool = True,
) -> Terms:
    """Assemble the loss at optimiser update ``update`` (an int, or a :class:`Progress` that
    also gives the epoch, for schedules by epoch), which sets the schedules."""
    objective, mask = comp.objective, trace.mask
    log_px = (trace.likelihood.log_prob(trace.params, trace.x) * mask).sum(0)
    kl_dims = trace.kl_per_dim()
    kl = trace.kl(kl_dims)  # analytic, or for a flow posterior the sampled log q(z) - log p(z)
    if training and objective.free_bits > 0:
        if trace.post_log_prob is not None:  # validation refuses this; a model built by hand may not
            raise ConfigError("objective.free_bits", FREE_BITS_WITH_FLOW)
        kl_train = (kl_dims.clamp_min(objective.free_bits) * mask.unsqueeze(-1)).sum((0, 2))
    else:
        kl_train = kl
    beta = objective.kl_weight.at(update) if training else 1.0
    kl_static = trace.kl_static()  # once per sequence; annealed with the rest, no free bits
    if kl_static is not None:
        kl_train = kl_train + kl_static
    per_sequence = -log_px + beta * kl_train
    aux = {}
    for key, term in model.aux.items():
        schedule = comp.aux[key].weight
        weight = schedule.at(update) if training else None  # evaluation reports, never weighs
        if schedule.off or (training and weight == 0.0):
            continue  # a switched-off objective costs nothing and is not reported
        aux[key] = (term(trace) * mask).sum(0)
        if training:
            per_sequence = per_sequence - weight * aux[key]
    return Terms(loss=per_sequence.mean(), log_px=log_px, kl=kl, aux=aux, kl_per_dim=kl_dims, kl_static=kl_static)


def weights_at(comp: Composition, update: int | Progress) -> dict[str, float]:
    """The schedule values at an update, for logs."""
    out = {"kl_weight": comp.objective.kl_weight.at(update)}
    out.update({f"aux_weight/{k}": spec.weight.at(update) for k, spec in comp.aux.items()})
    return out




class BatchObjective(nn.Module):
    """One batch's :class:`Terms` at an update, as one module call: the unit that training
    differentiates. DistributedDataParallel wraps this module, not the model, since it needs
    every parameter a step uses (the auxiliary objectives' too) to be used inside the forward
    it wraps."""

    def __init__(self, model: SequenceModel, comp: Composition) -> None:
        super().__init__()
        self.model = model
        self.comp = comp

    def forward(self, u: Tensor, x: Tensor, mask: Tensor, noise: Tensor | None, update: int | Progress) -> Terms:
        # the trace is freed on return: what backward needs, autograd holds
        return compute_terms(self.model, self.model(u, x, mask, noise), self.comp, update=update)
