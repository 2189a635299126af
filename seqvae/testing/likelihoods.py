"""Likelihoods as distributions: the properties every ``Likelihood`` component must have on its
own, whatever composition it is placed in (after Pyro's generic distribution tests and its
goodness-of-fit helpers).

- ``shapes``: log_prob (..., P), (..., D) -> (...), sample (..., D), input_embedding (..., E),
  all finite, for a leading shape of two dimensions; a finite gradient of log_prob reaches the
  parameters;
- ``normalised``: exp(log_prob) sums to 1 over the whole support: over every outcome for
  binary (all 2^D vectors) and categorical data (every class), by quadrature on a fine grid for
  real values with D = 1;
- ``sampling``: ``sample`` draws from the distribution ``log_prob`` scores: samples lie in the
  support, and a Pearson chi-square test (discrete) or a Kolmogorov-Smirnov test of the
  probability integral transform (real, D = 1) does not reject them at p = 0.001.

A likelihood that declares no ``support`` cannot be normalised or tested against its samples
without guessing what x holds: those two properties are noted as not checked.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqvae.errors import ConfigError
from seqvae.options import parse
from seqvae.registry import Registry, default_registry
from seqvae.slots import BuildContext, Likelihood
from seqvae.testing.properties import Failure, Property, PropertyReport, run_properties
from seqvae.testing.shrink import required_options

PARAMS = 3
"""Random parameter vectors each property is checked on."""
SAMPLES = 4000
"""Draws per parameter vector for the goodness-of-fit tests."""
P_VALUE = 1e-3
"""Reject a sampler when a test's p-value is below this (the draws are seeded: no flakiness)."""
NORMALISATION_TOL = 2e-3


@dataclass
class LikelihoodSubject:
    """A likelihood built for the x_dim its support is checked on."""

    label: str
    likelihood: Likelihood
    x_dim: int
    support: str | None
    notes: list[str] = field(default_factory=list)

    def params(self, n: int = PARAMS) -> Tensor:
        # scale 0.5: log-variances and logits near 0, so a modest grid holds the mass
        return 0.5 * torch.randn(n, self.likelihood.param_dim(self.x_dim))

    def outcomes(self) -> Tensor:
        """Every value of x for discrete supports: (K, D)."""
        if self.support == "binary":
            return torch.tensor(list(itertools.product((0.0, 1.0), repeat=self.x_dim)))
        classes = getattr(self.likelihood.options, "classes", None) or self.likelihood.param_dim(1)
        return torch.arange(classes, dtype=torch.float32)[:, None]


def build(name: str, registry: Registry | None = None, options: dict | None = None) -> LikelihoodSubject:
    """The likelihood ``name`` with its defaults (small ints for options without one) and
    ``options``, built for D = 1 (real and categorical values) or D = 3 (binary: 8 outcomes)."""
    registry = registry or default_registry()
    entry = registry.get("likelihood", name)
    label = f"likelihood {name!r} (plugin {entry.provider!r})"
    values = {**required_options(entry.cls), **(options or {})}
    support = getattr(entry.cls, "support", None)
    for x_dim in (3, 1, 2) if support == "binary" else (1, 2, 3):
        try:
            parsed = parse(entry.cls.Options, dict(values), "model.likelihood")
            likelihood = entry.cls(parsed, BuildContext(x_dim=x_dim, path="model.likelihood"))
        except ConfigError as error:
            last = error
            continue
        return LikelihoodSubject(label, likelihood.eval(), x_dim, support)
    from seqvae.testing.subjects import ConformanceError

    raise ConformanceError(label, {"build": f"builds for no feature size 1-3: {last}"})


def _checkable(s: LikelihoodSubject, what: str) -> bool:
    if s.support in ("binary", "categorical") or (s.support == "real" and s.x_dim == 1):
        return True
    reason = "no declared support" if s.support is None else f"x_dim {s.x_dim} (quadrature needs 1)"
    s.notes.append(f"{what}: not checked ({reason})")
    return False


# --------------------------------------------------------------------------- the properties


def check_shapes(s: LikelihoodSubject) -> None:
    """log_prob (4, 2, P), (4, 2, D) -> (4, 2); sample (4, 2, D); input_embedding(D, 5) of
    x -> (4, 2, 5); everything finite; log_prob's gradient wrt the params finite."""
    lik, D = s.likelihood, s.x_dim
    params = s.params(8).reshape(4, 2, -1).requires_grad_(True)
    x = lik.sample(params.detach())
    if tuple(x.shape) != (4, 2, D) or not torch.isfinite(x).all():
        raise Failure(f"sample of params (4, 2, P): expected finite (4, 2, {D}), got {tuple(x.shape)}")
    logp = lik.log_prob(params, x)
    if tuple(logp.shape) != (4, 2) or not torch.isfinite(logp).all():
        raise Failure(f"log_prob of (4, 2, P) and (4, 2, {D}): expected finite (4, 2), got {tuple(logp.shape)} "
                      "(it sums over the feature dimension)")  # fmt: skip
    (grad,) = torch.autograd.grad(logp.sum(), params, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all():
        raise Failure("log_prob gives no finite gradient wrt the emission parameters")
    embedded = lik.input_embedding(D, 5)(x)
    if tuple(embedded.shape) != (4, 2, 5):
        raise Failure(f"input_embedding(x_dim, 5) of (4, 2, {D}): expected (4, 2, 5), got {tuple(embedded.shape)}")


def check_normalised(s: LikelihoodSubject) -> None:
    """For 3 random parameter vectors, sum over all outcomes (binary, categorical) or the
    trapezoid integral on a grid over [-60, 60] and beyond the samples (real, D = 1) of
    exp(log_prob) is 1 within 2e-3."""
    if not _checkable(s, "normalised"):
        return
    with torch.no_grad():
        for i, params in enumerate(s.params()):
            if s.support == "real":
                grid = _grid(s, params)
                density = s.likelihood.log_prob(params.expand(len(grid), -1), grid[:, None]).double().exp()
                total = float(torch.trapezoid(density, grid.double()))
            else:
                x = s.outcomes()
                total = float(s.likelihood.log_prob(params.expand(len(x), -1), x).double().logsumexp(0).exp())
            if not abs(total - 1.0) <= NORMALISATION_TOL:
                how = "integrates" if s.support == "real" else "sums over every outcome"
                raise Failure(f"exp(log_prob) {how} to {total:.6g}, not 1, for parameter vector {i} "
                              f"(log of the total: {math.log(total) if total > 0 else float('-inf'):.4g})")


def check_sampling(s: LikelihoodSubject) -> None:
    """For 3 random parameter vectors, 4000 draws of ``sample`` lie in the support and pass
    Pearson's chi-square test against exp(log_prob) (discrete; outcomes expected fewer than 5
    times pooled), or a Kolmogorov-Smirnov test of their CDF values, computed from log_prob by
    quadrature, against Uniform(0, 1) (real, D = 1); p >= 0.001."""
    if not _checkable(s, "sampling"):
        return
    with torch.no_grad():
        for i, params in enumerate(s.params()):
            draws = s.likelihood.sample(params.expand(SAMPLES, -1))
            if s.support == "real":
                p, test = _ks_test(s, params, draws[:, 0].double()), "Kolmogorov-Smirnov"
            else:
                p, test = _chi_square_test(s, params, draws), "chi-square"
            if p < P_VALUE:
                raise Failure(f"samples do not follow log_prob for parameter vector {i}: {test} p = {p:.3g} "
                              f"< {P_VALUE} over {SAMPLES} draws (sample and log_prob disagree)")  # fmt: skip


def _grid(s: LikelihoodSubject, params: Tensor) -> Tensor:
    draws = s.likelihood.sample(params.expand(SAMPLES, -1))[:, 0]
    lo, hi = min(-60.0, float(draws.min())), max(60.0, float(draws.max()))
    return torch.linspace(lo - 10, hi + 10, 48001)


def _chi_square_test(s: LikelihoodSubject, params: Tensor, draws: Tensor) -> float:
    outcomes = s.outcomes()
    match = (draws[:, None, :] == outcomes[None]).all(-1)  # (N, K)
    outside = ~match.any(-1)
    if outside.any():
        raise Failure(f"sample gives values outside the {s.support} support, e.g. {draws[outside][0].tolist()}")
    counts = match.sum(0).double()
    expected = s.likelihood.log_prob(params.expand(len(outcomes), -1), outcomes).double().exp() * len(draws)
    rare = expected < 5
    if rare.any():  # pooled into one bin, as Pearson's test needs a few expected per bin
        counts = torch.cat([counts[~rare], counts[rare].sum()[None]])
        expected = torch.cat([expected[~rare], expected[rare].sum()[None]])
    statistic = float(((counts - expected) ** 2 / expected.clamp_min(1e-12)).sum())
    return _chi_square_survival(statistic, max(1, len(counts) - 1))


def _chi_square_survival(statistic: float, dof: int) -> float:
    """P(chi2_dof >= statistic) by the Wilson-Hilferty normal approximation (no scipy here)."""
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ks_test(s: LikelihoodSubject, params: Tensor, draws: Tensor) -> float:
    if not torch.isfinite(draws).all():
        raise Failure("sample gives non-finite values")
    grid = _grid(s, params).double()
    density = s.likelihood.log_prob(params.expand(len(grid), -1), grid.float()[:, None]).double().exp()
    cdf = torch.cat([density.new_zeros(1), torch.cumulative_trapezoid(density, grid)])
    cdf = cdf / cdf[-1]
    index = torch.searchsorted(grid, draws.clamp(grid[0], grid[-1])).clamp(1, len(grid) - 1)
    left, right = grid[index - 1], grid[index]
    weight = (draws - left) / (right - left)
    u = torch.sort(cdf[index - 1] + weight * (cdf[index] - cdf[index - 1])).values
    n = len(u)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    statistic = float(torch.maximum(ranks / n - u, u - (ranks - 1) / n).max())
    # Kolmogorov's asymptotic distribution, with Stephens' correction for finite n
    x = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * statistic
    if x < 0.3:  # the series below converges too slowly there; the p-value is 1 to 6 digits
        return 1.0
    return min(1.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101)))


LIKELIHOOD_CHECKS = (
    Property("shapes", check_shapes),
    Property("normalised", check_normalised),
    Property("sampling", check_sampling),
)


def check_likelihood(
    name: str,
    *,
    registry: Registry | None = None,
    options: dict | None = None,
    checks: tuple[Property, ...] = LIKELIHOOD_CHECKS,
) -> PropertyReport:
    """Every distribution property on the registered likelihood ``name``; ConformanceError
    names it, its plugin and each property that failed."""
    subject = build(name, registry, options)
    return run_properties(subject.label, subject, checks)


__all__ = ["LIKELIHOOD_CHECKS", "LikelihoodSubject", "build", "check_likelihood"]
