"""Closed forms against torch.distributions."""

import torch
from torch import distributions as D

from seqvae.nn import ClampedLeakyReLU, gaussian_kl, gaussian_log_prob, split_gaussian
from tests.conftest import tiny_model


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p, lv_q, lv_p = (torch.randn(5, 7, generator=g) * 2 for _ in range(4))
    ours = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    ref = D.kl_divergence(D.Normal(mu_q, (0.5 * lv_q).exp()), D.Normal(mu_p, (0.5 * lv_p).exp()))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(5, 7), atol=1e-6)


def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    x, mu, lv = (torch.randn(4, 6, generator=g) for _ in range(3))
    ref = D.Normal(mu, (0.5 * lv).exp()).log_prob(x)
    torch.testing.assert_close(gaussian_log_prob(x, mu, lv), ref)


def test_likelihoods_match_torch_distributions():
    model, _ = tiny_model()
    g = torch.Generator().manual_seed(2)
    params, x = torch.randn(3, 5, 6, generator=g), torch.randn(3, 5, 3, generator=g)
    mu, lv = params.chunk(2, -1)
    ref = D.Independent(D.Normal(mu, (0.5 * lv).exp()), 1).log_prob(x)
    torch.testing.assert_close(model.likelihood.log_prob(params, x), ref)

    from seqvae.registry import default_registry
    from seqvae.slots import BuildContext

    bern = default_registry().get("likelihood", "bernoulli").cls(None, BuildContext(x_dim=3))
    bits = torch.bernoulli(torch.full((3, 5, 3), 0.5), generator=g)
    ref = D.Independent(D.Bernoulli(logits=params[..., :3]), 1).log_prob(bits)
    torch.testing.assert_close(bern.log_prob(params[..., :3], bits), ref)

    cat_cls = default_registry().get("likelihood", "categorical").cls
    cat = cat_cls(cat_cls.Options(classes=6), BuildContext(x_dim=1))
    ids = torch.randint(0, 6, (3, 5, 1), generator=g).float()
    ref = D.Categorical(logits=params).log_prob(ids[..., 0].long())
    torch.testing.assert_close(cat.log_prob(params, ids), ref)


def test_mlp_activations_and_gaussian_outputs_are_clamped():
    act = ClampedLeakyReLU()
    x = torch.tensor([-100.0, -3.0, 0.0, 2.0, 100.0])
    assert act(x).tolist() == [-3.0, -1.0, 0.0, 2.0, 3.0]
    mu, logvar = split_gaussian(torch.tensor([[-50.0, 3.0, 50.0, -9.0]]))
    assert mu.tolist() == [[-8.0, 3.0]] and logvar.tolist() == [[8.0, -8.0]]
