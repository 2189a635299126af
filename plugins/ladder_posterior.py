"""``ladder-posterior``: q of a latent hierarchy drawn without a step loop, ladder-VAE style.

    (m, s) = MLP_l([z_t^{l+1}, d_t^l])           -- d_t^l: the decoder's context, which has read x_t
    q(z_t^l | .) = N(mu_q, var_q),  1 / var_q = 1 / var_p + 1 / s,
                   mu_q = var_q (mu_p / var_p + m / s)   -- precision-weighted with p(z_t^l | .)

The features are the decoder's context itself (no sequence model of its own): under a causal
decoder, q(z_t | .) reads x_{<=t}, a filtering posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqvae import hookimpl
from seqvae.contract import Reads
from seqvae.errors import ConfigError
from seqvae.nn import mlp, split_gaussian
from seqvae.slots import Encoder, EncoderFeatures


@dataclass
class LadderPosteriorOptions:
    hidden: int = 512
    layers: int = 2
    """Hidden layers of each latent layer's MLP."""


class LadderPosterior(Encoder):
    """Per latent layer, an MLP of [z^{l+1}, d_t^l] combined with the layer's prior by precision."""

    name = "ladder-posterior"
    Options = LadderPosteriorOptions
    uses_prior = True

    @classmethod
    def reads(cls, options, ctx) -> Reads:
        return Reads(context=("d_next",), layered=True)

    @classmethod
    def summary_reads(cls, options, ctx) -> frozenset[str]:
        return frozenset()

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if ctx.context_dim < 1:
            raise ConfigError(ctx.path, "needs a decoder that shares per-step features (context_dim >= 1)")
        self.layers = ctx.latent_layers
        self.nets = nn.ModuleList(
            mlp([layer.above_dim + layer.feature_dim] + [options.hidden] * options.layers + [2 * layer.z_dim])
            for layer in self.layers
        )

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        return EncoderFeatures(features=context)

    def posterior(self, cond, features, prior):
        raise NotImplementedError(f"encoder {self.name!r} gives latent layers (posterior_layer), not one z_t per step")

    def posterior_layer(self, layer: int, cond: Tensor, features: Tensor, prior: tuple[Tensor, Tensor]):
        spec = self.layers[layer]
        d = features[..., spec.feature_start:spec.feature_start + spec.feature_dim]
        m, log_s = split_gaussian(self.nets[layer](torch.cat([cond[..., :spec.above_dim], d], dim=-1)))
        mu_p, logvar_p = prior
        logvar = -torch.logaddexp(-logvar_p, -log_s)  # log of 1 / (1/var_p + 1/s)
        return torch.exp(logvar - logvar_p) * mu_p + torch.exp(logvar - log_s) * m, logvar


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(LadderPosterior)
