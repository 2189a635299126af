"""The likelihood conformance suite (seqvae.testing.likelihoods): every registered likelihood is
a normalised distribution that its own sampler draws from; broken ones fail it by name."""

from __future__ import annotations

import pytest
import torch
from seqvae_plugins.likelihoods import Bernoulli, Categorical, Gaussian

from seqvae.registry import build_registry, default_registry
from seqvae.testing import conformance
from tests.fake_plugins import plugin_module


@pytest.mark.parametrize("name", [entry.name for entry in default_registry().entries("likelihood")])
def test_builtin_likelihood_conforms(name):
    report = conformance.check_likelihood(name)
    assert report.passed == ["shapes", "normalised", "sampling"] and report.notes == []


class OffByConstant(Gaussian):
    name = "off-by-constant"

    def log_prob(self, params, x):
        return super().log_prob(params, x) + 0.05


class WideSampler(Gaussian):
    name = "wide-sampler"

    def sample(self, params):
        mu, logvar = self._split(params)
        return mu + 1.2 * torch.exp(0.5 * logvar) * torch.randn_like(mu)


class BiasedBits(Bernoulli):
    name = "biased-bits"

    def sample(self, params):
        return torch.bernoulli(torch.sigmoid(params + 0.3))


class UnnormalisedClasses(Categorical):
    name = "unnormalised-classes"

    def log_prob(self, params, x):
        return torch.log_softmax(params, -1).mul(0.9).gather(-1, x.long()).squeeze(-1)


class OutOfRange(Categorical):
    name = "out-of-range"

    def sample(self, params):
        return super().sample(params) + 1


@pytest.fixture(scope="module")
def broken_registry():
    classes = (OffByConstant, WideSampler, BiasedBits, UnnormalisedClasses, OutOfRange)
    return build_registry(extra=[plugin_module("broken_likelihoods", *classes)])


@pytest.mark.parametrize(("name", "failed", "says"), [
    ("off-by-constant", ["normalised"], "integrates to 1.05"),
    ("wide-sampler", ["sampling"], "Kolmogorov-Smirnov"),
    ("biased-bits", ["sampling"], "chi-square"),
    ("unnormalised-classes", ["normalised", "sampling"], "sums over every outcome"),
    ("out-of-range", ["sampling"], "outside the categorical support"),
])  # fmt: skip
def test_a_broken_likelihood_fails_by_name(name, failed, says, broken_registry):
    with pytest.raises(conformance.ConformanceError) as error:
        conformance.check_likelihood(name, registry=broken_registry)
    assert error.value.label == f"likelihood {name!r} (plugin 'broken_likelihoods')"
    assert list(error.value.failures) == failed and says in str(error.value)
