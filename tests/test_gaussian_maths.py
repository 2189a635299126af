"""Closed forms against torch.distributions."""

import math

import pytest
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


def _composed_log_prob(x, mu, lv):
    return -0.5 * (math.log(2 * math.pi) + lv + (x - mu).pow(2) * torch.exp(-lv))


def _composed_kl(mu_q, lv_q, mu_p, lv_p):
    return 0.5 * (lv_p - lv_q + (torch.exp(lv_q) + (mu_q - mu_p).pow(2)) * torch.exp(-lv_p) - 1.0)


@pytest.mark.parametrize(
    "shapes",
    [[(5, 7)] * 3, [(4, 1, 6), (4, 3, 6), (4, 3, 6)], [(3, 6), (6,), (1, 6)], [(6,), (6,), (3, 6)]],
    ids=["same", "gmm-broadcast", "param-broadcast", "logvar-widest"],
)
def test_gaussian_log_prob_gradients_are_exact_under_broadcasting(shapes):
    g = torch.Generator().manual_seed(3)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(gaussian_log_prob, args)
    out = gaussian_log_prob(*args)
    torch.testing.assert_close(out, _composed_log_prob(*args))
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((out * weights).sum(), args)
    ref = torch.autograd.grad((_composed_log_prob(*args) * weights).sum(), args)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("needs", [(True,) * 4, (False, True, False, True), (True, False, True, False)])
@pytest.mark.parametrize(
    "shapes",
    [[(5, 7), (5, 7), (7,), (1, 7)], [(7,), (7,), (5, 7), (5, 7)], [(5, 1), (7,), (1, 7), (5, 7)]],
    ids=["prior-broadcast", "posterior-broadcast", "mixed"],  # e.g. a standard-normal prior
)
def test_gaussian_kl_gradients_are_exact(needs, shapes):
    g = torch.Generator().manual_seed(4)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=r) for s, r in zip(shapes, needs, strict=True)]
    assert torch.autograd.gradcheck(gaussian_kl, args)
    torch.testing.assert_close(gaussian_kl(*args), _composed_kl(*args))


def _saved_bytes(fn, *args) -> int:
    """Bytes autograd keeps for backward while the output of ``fn`` is alive (distinct storages)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return sum(storages.values())


def test_fused_gaussian_terms_keep_less_for_backward():
    """The reason they are autograd Functions: what backward keeps sets the training peak memory."""
    n = 64 * 1024 * 4  # bytes of one (64, 1024) float32 tensor
    params = torch.randn(64, 2048, requires_grad=True)
    x = torch.randn(64, 1024)

    def head(fn):  # as in a likelihood: split a network's output into (mu, logvar)
        mu, lv = params.chunk(2, -1)
        return fn(x, torch.tanh(mu), lv)

    composed = _saved_bytes(head, _composed_log_prob)
    fused = _saved_bytes(head, gaussian_log_prob)
    assert fused == 3 * n  # tanh's output, x - mu, exp(-logvar)
    assert composed >= 4 * n  # also (x - mu)^2: and five full-size temporaries on the way
    mu_q, lv_q, mu_p, lv_p = (torch.randn(64, 1024, requires_grad=True) for _ in range(4))
    # mu_q - mu_p, exp(-lv_p) and lv_q, an input its caller holds anyway: two new tensors, not four
    assert _saved_bytes(gaussian_kl, mu_q, lv_q, mu_p, lv_p) == 3 * n
    assert _saved_bytes(_composed_kl, mu_q, lv_q, mu_p, lv_p) >= 4 * n
