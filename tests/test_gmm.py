"""The ``gmm`` likelihood against torch.distributions."""

import math

import pytest
import torch
from torch import distributions as D

from seqvae.composition import build_model, load_composition
from seqvae.registry import default_registry
from seqvae.slots import BuildContext


def _gmm(components: int = 4, x_dim: int = 3):
    cls = default_registry().get("likelihood", "gmm").cls
    return cls(cls.Options(components=components), BuildContext(x_dim=x_dim))


def _params(k: int, mu: torch.Tensor, logvar: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits, mu.flatten(-2), logvar.flatten(-2)], dim=-1)


def test_gmm_log_density_equals_mixture_same_family():
    k, d = 4, 3
    gmm = _gmm(k, d)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(5, 6, gmm.param_dim(d), generator=g) * 2
    x = torch.randn(5, 6, d, generator=g) * 2
    assert gmm.param_dim(d) == k * (1 + 2 * d) == params.shape[-1]
    logits, rest = params[..., :k], params[..., k:].reshape(5, 6, 2, k, d)
    mu, logvar = rest[..., 0, :, :], rest[..., 1, :, :].clamp(-8, 8)
    ref = D.MixtureSameFamily(
        D.Categorical(logits=logits), D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    ).log_prob(x)
    torch.testing.assert_close(gmm.log_prob(params, x), ref)


def test_one_component_gmm_is_the_diagonal_gaussian():
    gmm = _gmm(1, 3)
    gauss = default_registry().get("likelihood", "gaussian").cls(None, BuildContext(x_dim=3))
    gauss.options = gauss.Options()
    g = torch.Generator().manual_seed(1)
    mu_logvar, x = torch.randn(7, 6, generator=g), torch.randn(7, 3, generator=g)
    params = torch.cat([torch.randn(7, 1, generator=g), mu_logvar], -1)  # any logit: weight 1
    torch.testing.assert_close(gmm.log_prob(params, x), gauss.log_prob(mu_logvar, x))


def test_log_density_is_finite_far_from_every_component():
    gmm = _gmm(3, 2)
    params = torch.zeros(1, gmm.param_dim(2))
    params[:, 3 + 6 :] = -8.0  # narrow components at 0
    value = gmm.log_prob(params, torch.full((1, 2), 1e3))
    assert torch.isfinite(value).all() and value.item() < -1e9


def test_samples_follow_the_mixture_weights_and_components():
    gmm = _gmm(2, 1)
    weights = torch.tensor([0.3, 0.7])
    mu = torch.tensor([[-10.0], [10.0]])
    logvar = torch.full((2, 1), math.log(0.25))
    params = _params(2, mu, logvar, weights.log()).expand(20000, -1)
    torch.manual_seed(0)
    x = gmm.sample(params)
    assert x.shape == (20000, 1)
    right = x[:, 0] > 0
    assert abs(right.float().mean().item() - 0.7) < 0.02
    assert abs(x[right].mean().item() - 10.0) < 0.02 and abs(x[right].std().item() - 0.5) < 0.02
    assert abs(x[~right].mean().item() + 10.0) < 0.03


@pytest.mark.parametrize("name", ["vrnn-gmm", "rnn-gmm"])
def test_gmm_compositions_use_twenty_components(name):
    comp = load_composition(name)
    assert comp.slots["likelihood"].component == "gmm"
    assert comp.slots["likelihood"].options.components == 20


def test_the_emission_head_is_sized_for_the_mixture():
    comp = load_composition("rnn-gmm", ["model.decoder.hidden=4", "model.decoder.embed=4"])
    model = build_model(comp, x_dim=2)
    assert model.decoder.emit[-1].out_features == 20 * (1 + 2 * 2)
