"""``srnn-posterior``: SRNN's inference network (Fraccaro et al. 2016).

    smooth:  a_t = GRU_bwd(a_{t+1}, [d_t, emb(x_t)])   (one fused call, sequences reversed
                                                         within their own lengths)
    filter:  a_t = MLP([d_t, emb(x_t)])
    q(z_t | z_{t-1}, a_t):  (delta, logvar) = MLP([z_{t-1}, a_t])
                            mu = mu_prior(z_{t-1}, d_t) + delta    ("Resq", the default)
                            mu = delta                             (resq: false)

d_t is the decoder's context (the ``state-space`` decoder's forward GRU), z_{t-1} the field
``z_prev`` of cond_t; both are declared by the decoder (the ``state-space`` decoder's cond_t is
[z_{t-1}, d_t]). ``cond: all`` reads the whole of cond_t instead. The summary a_t has read x_t
and, through d_t, x_{<t}; smoothing, also x_{>t}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import ANY, CURRENT, Reads, backward_scan, field_reads, field_slice
from seqvae.errors import ConfigError
from seqvae.nn import ClampedLeakyReLU, SplitMLP, backward_rnn_states, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class SRNNPosteriorOptions:
    embed: int = 512
    hidden: int = 1024
    """Size of a_t."""
    mlp: int = 512
    layers: int = 2
    """Hidden layers of the posterior MLP."""
    inference: Literal["smooth", "filter"] = "smooth"
    resq: bool = True
    """Residual posterior mean: prior mean + MLP output."""
    cond: Literal["latent", "all"] = "latent"


class SRNNPosterior(Encoder):
    """Posterior from z_{t-1} and a_t, a summary of [d_t, x_t] (and, smoothing, the future)."""

    name = "srnn-posterior"
    Options = SRNNPosteriorOptions
    uses_prior = True

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(cond=("z_prev",) if options.cond == "latent" else (ANY,), context=("d_t",))

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str] | None:
        context = field_reads(ctx.context_fields)
        if context is None:
            return None
        inputs = {CURRENT, *context}  # a_t reads [d_t, x_t]
        return backward_scan(inputs) if options.inference == "smooth" else frozenset(inputs)

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.context_dim < 1:
            raise ConfigError(
                ctx.path, "needs a decoder that shares its per-step states d_t (context_dim >= 1)"
            )
        self.z_prev = field_slice(ctx.cond_fields, "z_prev", ctx.z_dim) if options.cond == "latent" else None
        if options.cond == "latent" and ctx.cond_fields is None and ctx.cond_dim < ctx.z_dim:  # undeclared
            raise ConfigError(
                f"{ctx.path}.cond",
                f"cond_t has {ctx.cond_dim} entries, fewer than latent_dim {ctx.z_dim}",
            )
        # a plain posterior does not read the prior: let the engine batch the prior after the loop
        self.uses_prior = options.resq
        self.embed = ctx.likelihood.input_embedding(ctx.x_dim, options.embed)
        in_dim = ctx.context_dim + options.embed
        if options.inference == "smooth":
            self.rnn = nn.GRU(in_dim, options.hidden)
        else:
            self.filter = nn.Sequential(nn.Linear(in_dim, options.hidden), ClampedLeakyReLU())
        self.summary_dim = options.hidden
        cond_dim = ctx.z_dim if options.cond == "latent" else ctx.cond_dim
        self.net = SplitMLP(options.hidden, cond_dim, options.mlp, options.layers, 2 * ctx.z_dim)

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        inputs = torch.cat([context, self.embed(x)], dim=-1)
        if self.options.inference == "smooth":
            a = backward_rnn_states(self.rnn, inputs, mask)
        else:
            a = self.filter(inputs) * mask.unsqueeze(-1)
        return EncoderFeatures(features=self.net.first(a), summary=a)

    def posterior(self, cond, features, prior=None) -> tuple[Tensor, Tensor]:
        z_prev = cond[..., self.z_prev] if self.options.cond == "latent" else cond
        mu, logvar = split_gaussian(self.net(features, z_prev))
        if self.options.resq:
            if prior is None:
                raise ValueError(f"encoder {self.name!r} with resq needs the prior's (mu, logvar)")
            mu = prior[0] + mu
        return mu, logvar


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(SRNNPosterior)
