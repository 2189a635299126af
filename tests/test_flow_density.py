"""The IAF posterior's log-density is the change of variables of its own transforms.

Checked against torch.distributions' TransformedDistribution over the same steps written as
``Transform`` subclasses whose inverse is solved dimension by dimension and whose log |det| is
the slogdet of the autograd Jacobian: neither reuses the flow's own log-det formula.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, Transform, TransformedDistribution, constraints
from torch.nn import functional as F

from seqvae.flow import FlowOptions, InverseAutoregressiveFlow

Z, C, B = 5, 3, 7


def _flow(steps: int = 2, context: bool = True, hidden: int = 11, seed: int = 0) -> InverseAutoregressiveFlow:
    """A flow far from its near-identity start, so that every term matters."""
    torch.manual_seed(seed)
    flow = InverseAutoregressiveFlow(FlowOptions(steps=steps, hidden=hidden, context=context), Z, C).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.7)
    return flow


def _made(step, z, cond):
    add = step.ctx(cond) if step.ctx is not None else None
    return step.out(F.relu(step.inp(z, add=add))).chunk(2, dim=-1)


class StepTransform(Transform):
    """One IAF step as a torch Transform, for one context row per sample."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, step, cond) -> None:
        super().__init__(cache_size=0)  # no cache: log_prob must invert for real
        self.step, self.cond = step, cond

    def _call(self, x):
        return self.step(x, self.cond)[0]

    def _inverse(self, y):
        # y_i = g_i x_i + (1 - g_i) m_i with (m_i, g_i) reading x before i in the step's order
        x = torch.zeros_like(y)
        for i in self.step.order.tolist():
            m, s = _made(self.step, x, self.cond)
            g = torch.sigmoid(s[..., i])
            x = x.clone()
            x[..., i] = (y[..., i] - (1 - g) * m[..., i]) / g
        return x

    def log_abs_det_jacobian(self, x, y):
        out = []
        for b in range(x.shape[0]):
            jac = torch.autograd.functional.jacobian(lambda v, b=b: self.step(v[None], self.cond[b : b + 1])[0][0], x[b])
            out.append(torch.linalg.slogdet(jac)[1])
        return torch.stack(out)


def test_log_density_equals_transformed_distribution_on_the_same_transforms():
    flow = _flow()
    gen = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(B, Z, generator=gen, dtype=torch.float64), torch.randn(B, Z, generator=gen, dtype=torch.float64)
    noise, cond = torch.randn(B, Z, generator=gen, dtype=torch.float64), torch.randn(B, C, generator=gen, dtype=torch.float64)
    z0 = mu + torch.exp(0.5 * logvar) * noise
    with torch.no_grad():
        z, log_q = flow(z0, logvar, noise, cond)
        reference = TransformedDistribution(
            Independent(Normal(mu, torch.exp(0.5 * logvar)), 1), [StepTransform(s, cond) for s in flow.steps]
        )
        want = reference.log_prob(z)
    torch.testing.assert_close(log_q, want, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(z, z0)  # the flow did something


def test_each_step_is_autoregressive_in_its_own_order_and_orders_alternate():
    flow = _flow(steps=3, context=False)
    orders = [s.order.tolist() for s in flow.steps]
    assert orders[0] == list(range(Z)) and orders[1] == list(reversed(range(Z))) and orders[2] == orders[0]
    x = torch.randn(Z, dtype=torch.float64)
    for step in flow.steps:
        jac = torch.autograd.functional.jacobian(lambda v, step=step: step(v[None], None)[0][0], x)
        in_order = jac[step.order][:, step.order]
        assert torch.equal(in_order.triu(1), torch.zeros_like(in_order))  # output i reads nothing after i
        assert (in_order.tril(-1) != 0).any()  # and something before i


def test_a_new_flow_starts_close_to_the_identity():
    torch.manual_seed(0)
    flow = InverseAutoregressiveFlow(FlowOptions(steps=2), Z, C).double()
    z0 = torch.randn(B, Z, dtype=torch.float64)
    z, _ = flow(z0, torch.zeros(B, Z, dtype=torch.float64), z0, torch.zeros(B, C, dtype=torch.float64))
    # each gate starts near sigmoid(2) = 0.88: two steps keep most of z0
    assert torch.corrcoef(torch.stack([z.flatten(), z0.flatten()]))[0, 1] > 0.95


def test_gradients_reach_every_flow_parameter_and_masked_weights_get_none():
    flow = _flow().float()
    z0, cond = torch.randn(B, Z, requires_grad=True), torch.randn(B, C)
    z, log_q = flow(z0, torch.zeros(B, Z), z0.detach(), cond)
    (z.pow(2).sum() + log_q.sum()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for step in flow.steps:
        for layer in (step.inp, step.out):
            mask = layer.parametrizations.weight[0].mask
            assert torch.equal(layer.parametrizations.weight.original.grad * (1 - mask), torch.zeros_like(mask))


def test_zero_steps_is_the_gaussian_density_at_the_sample():
    flow = InverseAutoregressiveFlow(FlowOptions(steps=0), Z, C).double()
    mu, logvar, noise = (torch.randn(B, Z, dtype=torch.float64) for _ in range(3))
    z0 = mu + torch.exp(0.5 * logvar) * noise
    z, log_q = flow(z0, logvar, noise, None)
    assert z is z0
    torch.testing.assert_close(log_q, Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1), rtol=1e-12, atol=1e-12)
