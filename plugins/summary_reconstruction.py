"""``summary-reconstruction``: Z-Forcing's auxiliary cost.

    alpha * sum_t log p_xi(stopgrad(b_t) | z_t)        (z_force: from z_t alone, as in the paper)
    alpha * sum_t log p_xi(stopgrad(b_t) | h_{t-1}, z_t)   (default, as in the reference code)

p_xi is a diagonal Gaussian with (tanh(mu), logvar) = MLP(input); the ``l2`` cost replaces the
log-density by -sum (b_t - tanh(mu))^2. b_t is the encoder's per-step summary, detached: the cost
trains the latents (through the posterior network) and this network, never the encoder's RNN.

Detaching the target is not enough for that: z_t itself is computed from b_t (and h_{t-1} from
earlier z's), so the cost reads ``trace.local_z()``, the same z_t with its inputs detached, and
h_{t-1} detached. This follows the issue's requirement of exactly zero gradient into the
backward RNN; the authors' code lets the cost reach it (and the decoder) through z_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.nn import gaussian_log_prob, mlp, split_gaussian
from seqvae.slots import AuxObjective


@dataclass
class SummaryReconstructionOptions:
    hidden: int = 512
    z_force: bool = False
    """Predict b_t from z_t alone (the paper) instead of from [h_{t-1}, z_t]."""
    cost: Literal["gaussian", "l2"] = "gaussian"


class SummaryReconstruction(AuxObjective):
    """Make z_t predictive of the encoder's summary of the future."""

    name = "summary-reconstruction"
    Options = SummaryReconstructionOptions

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.summary_dim < 1:
            raise ConfigError(ctx.path, "needs an encoder that exposes a per-step summary (summary_dim >= 1)")
        if ctx.z_dim < 1:
            raise ConfigError(ctx.path, "needs a model with latent variables")
        in_dim = ctx.z_dim if options.z_force else ctx.cond_dim + ctx.z_dim
        self.net = mlp([in_dim, options.hidden, 2 * ctx.summary_dim])

    def forward(self, trace) -> Tensor:
        z = trace.local_z()
        inputs = z if self.options.z_force else torch.cat([trace.cond.detach(), z], dim=-1)
        mu, logvar = split_gaussian(self.net(inputs))
        target = trace.summary.detach()
        mean = torch.tanh(mu)
        if self.options.cost == "l2":
            return -(target - mean).pow(2).sum(-1)
        return gaussian_log_prob(target, mean, logvar).sum(-1)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(SummaryReconstruction)
