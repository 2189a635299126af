"""``backward-lm``: Z-Forcing's optional backward language-model loss.

A linear head on the encoder's backward summary predicts x_t from b_{t+1} (zeros after the last
real step), with the model's own likelihood. Unlike the reconstruction cost it is *not*
detached: its purpose is to train the backward RNN to carry information about the future.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import ANY, PAST, Reads
from seqvae.errors import ConfigError
from seqvae.slots import AuxObjective


class BackwardLM(AuxObjective):
    """log p(x_t | Linear(b_{t+1})) per step."""

    name = "backward-lm"

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        # b_{t+1} must not have read x_t, the target: a summary that has read no x_{<t}
        return Reads(summary=(ANY,), summary_unread=(PAST,),
                     why="it predicts x_t from the summary at step t+1, which must not have read x_t")

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.summary_dim < 1:
            raise ConfigError(ctx.path, "needs an encoder that exposes a per-step summary (summary_dim >= 1)")
        self.head = nn.Linear(ctx.summary_dim, ctx.param_dim)

    def forward(self, trace) -> Tensor:
        summary = trace.summary  # zero on padding, so b_{L+1} = 0 after each sequence's end
        following = torch.cat([summary[1:], torch.zeros_like(summary[:1])], dim=0)
        return trace.likelihood.log_prob(self.head(following), trace.x)


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(BackwardLM)
