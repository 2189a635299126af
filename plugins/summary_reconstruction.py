"""``summary-reconstruction``: Z-Forcing's auxiliary cost.

    alpha * sum_t log p_xi(stopgrad(b_t) | z_t)        (z_force: from z_t alone, as in the paper)
    alpha * sum_t log p_xi(stopgrad(b_t) | h_{t-1}, z_t)   (default, as in the reference code)

p_xi is a diagonal Gaussian with (tanh(mu), logvar) = MLP(input); the ``l2`` cost replaces the
log-density by -sum (b_t - tanh(mu))^2. b_t is the encoder's per-step summary; the target is
always detached. Where else the cost's gradient goes is the ``gradient`` option:

- ``authors`` (the default): only the target is detached, exactly as the authors' code
  (sordonia/zforcing, ``fwd_pass``) computes it, which produced the published numbers
  (MODELS.md, Z-Forcing). The cost reads ``trace.z`` and ``trace.cond`` with their graphs, so
  besides this network it trains the whole posterior network, the encoder's RNN and embedding
  (through b_t in the posterior's input) and the decoder's recurrence (through h_{t-1} in the
  posterior's input and, unless ``z_force``, in this network's input). It never reaches the
  prior nor the emission.
- ``local``: a stricter variant to compare against. Detaching the target does not stop the
  cost from training the encoder's RNN, because z_t itself is computed from b_t (and h_{t-1}
  from earlier z's); so the cost reads ``trace.local_z()``, the same z_t recomputed from
  detached (h_{t-1}, b_t) with the same noise, and a detached h_{t-1}. It then trains this
  network and the posterior's in-loop layers only: exactly zero gradient into the encoder's
  RNN, the b_t-side half of the posterior's first layer and the decoder.

Either way the cost is computed batched over all steps after the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seqvae import hookimpl
from seqvae.contract import FUTURE, Reads
from seqvae.errors import ConfigError
from seqvae.nn import gaussian_log_prob, mlp, split_gaussian
from seqvae.slots import AuxObjective


@dataclass
class SummaryReconstructionOptions:
    hidden: int = 512
    z_force: bool = False
    """Predict b_t from z_t alone (the paper) instead of from [h_{t-1}, z_t]."""
    cost: Literal["gaussian", "l2"] = "gaussian"
    gradient: Literal["authors", "local"] = "authors"
    """Where the cost's gradient reaches: ``authors``, everything z_t and h_{t-1} depend on
    (the reference code); ``local``, this network and the posterior's in-loop layers only."""


class SummaryReconstruction(AuxObjective):
    """Make z_t predictive of the encoder's summary of the future."""

    name = "summary-reconstruction"
    Options = SummaryReconstructionOptions

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(summary=(FUTURE,), why="it makes z_t predictive of the encoder's summary of the future")

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.summary_dim < 1:
            raise ConfigError(ctx.path, "needs an encoder that exposes a per-step summary (summary_dim >= 1)")
        if ctx.z_dim < 1:
            raise ConfigError(ctx.path, "needs a model with latent variables")
        in_dim = ctx.z_dim if options.z_force else ctx.cond_dim + ctx.z_dim
        self.net = mlp([in_dim, options.hidden, 2 * ctx.summary_dim])

    def forward(self, trace) -> Tensor:
        if self.options.gradient == "local":
            z, cond = trace.local_z(), trace.cond.detach()
        else:
            z, cond = trace.z, trace.cond
        inputs = z if self.options.z_force else torch.cat([cond, z], dim=-1)
        mu, logvar = split_gaussian(self.net(inputs))
        target = trace.summary.detach()
        mean = torch.tanh(mu)
        if self.options.cost == "l2":
            return -(target - mean).pow(2).sum(-1)
        return gaussian_log_prob(target, mean, logvar).sum(-1)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(SummaryReconstruction)
