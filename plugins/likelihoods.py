"""Output distribution families: diagonal Gaussian, Bernoulli, categorical."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqvae import hookimpl
from seqvae.errors import ConfigError
from seqvae.nn import gaussian_log_prob
from seqvae.slots import Likelihood


@dataclass
class GaussianOptions:
    logvar_bound: float = 8.0
    """log-variances are clamped to [-bound, bound]."""


class Gaussian(Likelihood):
    """Diagonal Gaussian per feature: params are (mu, logvar), 2 D values per step."""

    name = "gaussian"
    support = "real"
    Options = GaussianOptions

    def param_dim(self, x_dim: int) -> int:
        return 2 * x_dim

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = params.chunk(2, dim=-1)
        bound = self.options.logvar_bound
        return mu, logvar.clamp(-bound, bound)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        mu, logvar = self._split(params)
        return gaussian_log_prob(x, mu, logvar).sum(-1)

    def sample(self, params: Tensor) -> Tensor:
        mu, logvar = self._split(params)
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def input_embedding(self, x_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(x_dim, out_dim)


class Bernoulli(Likelihood):
    """Independent Bernoulli per feature (binary pixels, piano keys): params are logits."""

    name = "bernoulli"
    support = "binary"

    def param_dim(self, x_dim: int) -> int:
        return x_dim

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def input_embedding(self, x_dim: int, out_dim: int) -> nn.Module:
        return nn.Linear(x_dim, out_dim)


@dataclass
class CategoricalOptions:
    classes: int
    """Vocabulary size; observations are class indices stored in a trailing dimension of 1."""


class _IndexEmbedding(nn.Embedding):
    def forward(self, x: Tensor) -> Tensor:  # (..., 1) float indices -> (..., dim)
        return super().forward(x[..., 0].long())


class Categorical(Likelihood):
    """One class per step (word ids): params are logits over ``classes``."""

    name = "categorical"
    support = "categorical"
    Options = CategoricalOptions

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        if options.classes < 2:
            raise ConfigError(f"{ctx.path}.classes", f"expected at least 2 classes, got {options.classes}")
        if ctx.x_dim != 1:
            raise ConfigError(ctx.path, f"expects class indices with feature size 1; the data has {ctx.x_dim}")

    def param_dim(self, x_dim: int) -> int:
        return self.options.classes

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logp = F.log_softmax(params, dim=-1)
        return logp.gather(-1, x.long()).squeeze(-1)

    def sample(self, params: Tensor) -> Tensor:
        probs = F.softmax(params, dim=-1)
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1)
        return flat.reshape(*params.shape[:-1], 1).to(params.dtype)

    def input_embedding(self, x_dim: int, out_dim: int) -> nn.Module:
        return _IndexEmbedding(self.options.classes, out_dim)


@hookimpl
def seqvae_register(registry) -> None:
    for cls in (Gaussian, Bernoulli, Categorical):
        registry.add(cls)
