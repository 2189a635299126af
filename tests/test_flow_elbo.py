"""A flow posterior in the objective: K = 0 is today's model, the sampled KL is unbiased for the
analytic one, the IWAE bound weighs samples by the flow's density, and misuse is refused."""

from __future__ import annotations

import math

import pytest
import torch

from seqvae.composition import build_model, load_composition, validate
from seqvae.data import Batch
from seqvae.errors import UserError
from seqvae.evaluate import iwae_bound, log_weights
from seqvae.flow import FlowOptions, InverseAutoregressiveFlow
from seqvae.objective import compute_terms
from seqvae.registry import default_registry

TINY = {
    "dkf": ["model.latent_dim=3", "model.decoder.emission_hidden=6", "model.encoder.embed=5",
            "model.encoder.hidden=7", "model.prior.hidden=6"],
    "zforcing": ["model.latent_dim=3", "model.decoder.embed=5", "model.decoder.hidden=8",
                 "model.encoder.embed=5", "model.encoder.hidden=7", "model.encoder.mlp=6",
                 "model.prior.hidden=6", "model.aux.reconstruction.hidden=6"],
}  # fmt: skip
MODELS = list(TINY)


def _model(name: str, *overrides: str, seed: int = 0):
    comp = load_composition(name, [*TINY[name], *overrides])
    torch.manual_seed(seed)
    return build_model(comp, 3).double(), comp


def _batch(steps: int = 6, size: int = 3, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, size, 3, generator=gen, dtype=torch.float64)
    u = torch.cat([torch.zeros_like(x[:1]), x[:-1]])
    mask = torch.ones(steps, size, dtype=torch.float64)
    mask[steps // 2 :, -1] = 0
    return u, x, mask


@pytest.mark.parametrize("name", MODELS)
def test_zero_flow_steps_is_the_model_without_a_flow_bit_for_bit(name):
    plain, comp = _model(name)
    zero, _ = _model(name, "model.encoder.flow.steps=0", "model.encoder.flow.hidden=9")
    assert zero.flow is None and plain.state_dict().keys() == zero.state_dict().keys()
    u, x, mask = _batch()
    noise = plain.draw_noise(6, 3, "cpu", torch.float64)
    a, b = plain(u, x, mask, noise), zero(u, x, mask, noise)
    assert b.post_log_prob is None
    assert torch.equal(compute_terms(plain, a, comp).loss, compute_terms(zero, b, comp).loss)
    assert torch.equal(log_weights(a), log_weights(b))


@pytest.mark.parametrize("name", MODELS)
def test_the_sampled_kl_of_a_zero_step_flow_averages_to_the_analytic_kl(name):
    """The identity flow forces the sampled path: on the same trace, log q(z) - log p(z) minus
    the analytic KL (which, as z_{t-1} feeds step t, is itself random) has mean zero."""
    model, comp = _model(name)
    u, x, mask = _batch(size=2)
    draws = 4000
    model.flow = InverseAutoregressiveFlow(FlowOptions(steps=0), model.z_dim, model.decoder.cond_dim).double()
    torch.manual_seed(3)
    with torch.no_grad():
        trace = model(u.repeat(1, draws, 1), x.repeat(1, draws, 1), mask.repeat(1, draws))
        sampled = compute_terms(model, trace, comp, training=False)
        analytic = trace.kl_per_dim().sum((0, 2))
    assert trace.post_log_prob is not None
    diff = (sampled.kl - analytic).view(draws, 2)
    standard_error = diff.std(0) / math.sqrt(draws)
    assert (diff.mean(0).abs() < 4 * standard_error).all(), (diff.mean(0), standard_error)
    assert (diff.std(0) > 0).all()  # the two really are different estimators
    torch.testing.assert_close(sampled.elbo, log_weights(trace))  # the ELBO is the K = 1 weight


@pytest.mark.parametrize("name", MODELS)
def test_with_a_flow_the_elbo_is_the_one_sample_weight_and_iwae_is_above_it(name):
    model, comp = _model(name, "model.encoder.flow.steps=2", "model.encoder.flow.hidden=8")
    u, x, mask = _batch()
    with torch.no_grad():
        torch.manual_seed(5)
        trace = model(u, x, mask)
        elbo = compute_terms(model, trace, comp, training=False).elbo
        torch.testing.assert_close(elbo, log_weights(trace))
        torch.manual_seed(5)  # K = 1 draws the same noise: the same number
        torch.testing.assert_close(iwae_bound(model, Batch(u, x, mask), 1), elbo)
        torch.manual_seed(6)
        draws = 256
        trace = model(u.repeat(1, draws, 1), x.repeat(1, draws, 1), mask.repeat(1, draws))
        mean_elbo = compute_terms(model, trace, comp, training=False).elbo.view(draws, -1).mean(0)
        iwae = iwae_bound(model, Batch(u, x, mask), 64)
    assert (iwae > mean_elbo).all(), (iwae, mean_elbo)


def test_an_aux_cost_reading_local_z_sees_the_flow_output():
    model, _ = _model("zforcing", "model.encoder.flow.steps=2", "model.aux.reconstruction.gradient=local")
    u, x, mask = _batch()
    with torch.no_grad():
        trace = model(u, x, mask)
    torch.testing.assert_close(trace.local_z(), trace.z)


def test_free_bits_with_a_flow_is_refused_with_the_fix():
    with pytest.raises(UserError, match=r"objective\.free_bits: .*set objective\.free_bits=0 or model\.encoder\.flow\.steps=0"):
        load_composition("dkf-iaf", ["objective.free_bits=0.1"])
    load_composition("dkf-iaf", ["objective.free_bits=0.1", "model.encoder.flow.steps=0"])


def test_bad_flow_options_name_their_key():
    with pytest.raises(UserError, match=r"model\.encoder\.flow\.stepz: unknown option; did you mean 'steps'"):
        load_composition("dkf", ["model.encoder.flow.stepz=2"])
    with pytest.raises(UserError, match=r"model\.encoder\.flow: steps: expected an int >= 0"):
        load_composition("dkf", ["model.encoder.flow.steps=-1"])


def test_the_flow_survives_the_composition_round_trip_and_a_change_of_encoder():
    comp = load_composition("dkf-iaf")
    again = validate(comp.to_dict(), default_registry())
    assert again.slots["encoder"].flow == comp.slots["encoder"].flow == FlowOptions(steps=2, hidden=100)
    swapped = load_composition("dkf-iaf", ["model.encoder.component=srnn-posterior"])
    assert swapped.slots["encoder"].flow.steps == 2
    assert "flow" not in load_composition("dkf").to_dict()["model"]["encoder"]  # as it always read


def test_an_encoder_with_an_option_named_flow_is_refused_at_registration():
    from dataclasses import dataclass

    from seqvae.registry import InvalidComponent, build_registry
    from seqvae.slots import Encoder

    @dataclass
    class Taken:
        flow: int = 1

    class FlowingEncoder(Encoder):
        name = "flowing"
        Options = Taken

        def precompute(self, x, mask, context):
            raise NotImplementedError

        def posterior(self, cond, features, prior):
            raise NotImplementedError

    with pytest.raises(InvalidComponent, match="option 'flow' is a key the engine reads itself"):
        build_registry().add(FlowingEncoder, "acme")
