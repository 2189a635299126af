# tests/test_poe_prior.py
import pytest
import torch
from seqvae_example.poe_prior import PoEPriorOptions, ProductOfExpertsPrior

from seqvae.composition import load_composition
from seqvae.errors import UserError
from seqvae.nn import gaussian_log_prob
from seqvae.slots import BuildContext


def test_the_prior_is_the_normalised_product_of_its_experts():
    torch.manual_seed(0)
    prior = ProductOfExpertsPrior(PoEPriorOptions(experts=3, hidden=8), BuildContext(x_dim=2, z_dim=4, cond_dim=5))
    cond = torch.randn(6, 5)
    mu, logvar = prior(cond)
    heads = prior.net(cond).unflatten(-1, (3, 8))
    experts_mu, experts_logvar = heads.chunk(2, dim=-1)
    z = torch.randn(10, 6, 4)
    # the sum of the experts' log-densities (and N(0, I)'s) minus the prior's is constant in z
    zero = torch.zeros(())
    product = gaussian_log_prob(z[:, :, None], experts_mu, experts_logvar).sum(-2) + gaussian_log_prob(z, zero, zero)
    gap = product - gaussian_log_prob(z, mu, logvar)
    assert torch.allclose(gap, gap[:1].expand_as(gap), atol=1e-4)


def test_bad_options_name_the_yaml_key():
    with pytest.raises(UserError, match=r"model\.prior: experts: expected at least 1, got 0"):
        load_composition("zforcing", ["model.prior.component=poe", "model.prior.experts=0"])
