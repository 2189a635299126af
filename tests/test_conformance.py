"""The conformance suite over every built-in composition and registered component, a
third-party plugin passing it, and broken components failing it by name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from seqvae_plugins.backward_lstm import BackwardLSTMEncoder
from seqvae_plugins.latent_lstm import LatentLSTMDecoder
from torch import Tensor, nn

from seqvae.composition import builtin_compositions, load_composition
from seqvae.errors import ConfigError
from seqvae.registry import build_registry, default_registry
from seqvae.slots import AuxObjective, EncoderFeatures, Prior
from seqvae.testing import ConformanceError, ConformanceSkip, conformance, is_size_option, shrink
from tests.fake_plugins import plugin_module

COMPOSITIONS = conformance.composition_cases()
COMPONENTS = conformance.component_cases(exclude_covered=True)
"""Components no built-in composition uses; the others are checked inside those."""


@pytest.mark.parametrize("check", conformance.CHECKS, ids=str)
@pytest.mark.parametrize("case", COMPOSITIONS + COMPONENTS, ids=str)
def test_conformance(case, check):
    conformance.run(case, check)


def test_every_builtin_composition_and_registered_component_is_covered():
    assert [case.name for case in COMPOSITIONS] == list(builtin_compositions())
    covered = conformance.covered_components()
    own = {(case.kind, case.name) for case in COMPONENTS}
    registry = default_registry()
    for kind in conformance.COMPONENT_KINDS:
        for entry in registry.entries(kind):
            key = (kind, entry.name)
            assert (key in covered) != (key in own), key  # checked exactly once
    assert ("likelihood", "bernoulli") in own  # no built-in composition uses it


# --------------------------------------------------------------------------- a third party


_plugin = plugin_module  # a plugin module made on the spot, as a third party would write one


@dataclass
class TanhPriorOptions:
    hidden: int = 32


class TanhPrior(Prior):
    """Mean from a tanh MLP of cond_t, log-variance a learned vector."""

    name = "tp-tanh-prior"
    Options = TanhPriorOptions

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.net = nn.Sequential(
            nn.Linear(ctx.cond_dim, options.hidden), nn.Tanh(), nn.Linear(options.hidden, ctx.z_dim)
        )
        self.logvar = nn.Parameter(torch.zeros(ctx.z_dim))

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu = self.net(cond)
        return mu, self.logvar.expand_as(mu)


class PredictX(AuxObjective):
    """log p(x_t | Linear(z_t)) under the model's likelihood."""

    name = "tp-predict-x"

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.head = nn.Linear(ctx.z_dim, ctx.param_dim)

    def forward(self, trace) -> Tensor:
        return trace.likelihood.log_prob(self.head(trace.z), trace.x)


THIRD_PARTY = _plugin("thirdparty_seqvae", TanhPrior, PredictX)
THIRD_PARTY_MODEL = {
    "base": "zforcing",
    "description": "a built-in composition with a third-party prior and auxiliary objective",
    "model": {
        "prior": {"component": "tp-tanh-prior"},  # a new component: the base's options go
        "aux": {"predict": {"component": "tp-predict-x", "weight": 0.1}},
    },
}


def test_a_third_party_plugin_passes_the_suite():
    registry = build_registry(extra=[THIRD_PARTY])
    rng = torch.get_rng_state()
    report = conformance.check_composition(THIRD_PARTY_MODEL, name="tp-model", registry=registry)
    assert report.passed == [check.name for check in conformance.CHECKS]
    assert report.composition.slots["prior"].options.hidden < 32  # shrunk without naming it
    assert report.composition.latent_dim == 4
    for kind, name in (("prior", "tp-tanh-prior"), ("aux", "tp-predict-x")):
        report = conformance.check_component(kind, name, registry=registry)
        assert "composition 'zforcing'" in report.label
    assert torch.equal(rng, torch.get_rng_state())  # the suite leaves the caller's RNG alone


# --------------------------------------------------------------------------- broken components


class StepMixingPrior(TanhPrior):
    """Broken: centres its mean over every leading dimension, padded steps included."""

    name = "broken-mixing-prior"

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = super().forward(cond)
        return mu - mu.mean(dim=tuple(range(mu.dim() - 1)), keepdim=True), logvar


class DeadParameterPrior(TanhPrior):
    """Broken: holds a parameter that nothing reads."""

    name = "broken-dead-prior"

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.unused = nn.Parameter(torch.zeros(3))


class ShortPrior(TanhPrior):
    """Broken: returns one latent dimension too few."""

    name = "broken-short-prior"

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = super().forward(cond)
        return mu[..., 1:], logvar[..., 1:]


class HostConstantPrior(TanhPrior):
    """Broken for accelerators: adds a constant made on the CPU whatever the model's device."""

    name = "broken-host-prior"

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = super().forward(cond)
        return mu + torch.zeros(mu.shape[-1]), logvar


class WholeFlipEncoder(BackwardLSTMEncoder):
    """Broken: reverses the whole padded batch instead of each sequence within its length,
    so the backward states of real steps read the padding."""

    name = "broken-flip-encoder"

    def precompute(self, x: Tensor, mask: Tensor, context: Tensor | None) -> EncoderFeatures:
        states, _ = self.rnn(torch.flip(self.embed(x), [0]))
        summary = torch.flip(states, [0]) * mask.unsqueeze(-1)
        return EncoderFeatures(features=self.post_summary(summary), summary=summary)


def test_a_prior_that_mixes_in_padding_fails_padding_by_name():
    registry = build_registry(extra=[_plugin("broken_mixing", StepMixingPrior)])
    with pytest.raises(ConformanceError) as info:
        conformance.check_component("prior", "broken-mixing-prior", registry=registry)
    error = info.value
    assert set(error.failures) == {"padding"}
    assert str(error).startswith("prior 'broken-mixing-prior' (plugin 'broken_mixing')")
    assert "in prior_mu at step 0" in error.failures["padding"]
    assert "look at prior 'broken-mixing-prior'" in error.failures["padding"]


def test_a_parameter_without_gradient_fails_gradients_by_name():
    registry = build_registry(extra=[_plugin("broken_dead", DeadParameterPrior)])
    with pytest.raises(ConformanceError) as info:
        conformance.check_component("prior", "broken-dead-prior", registry=registry)
    assert set(info.value.failures) == {"gradients"}
    detail = info.value.failures["gradients"]
    assert "prior.unused (prior 'broken-dead-prior'" in detail
    assert "no gradient from the negative ELBO" in detail


def test_a_prior_of_the_wrong_size_fails_shapes_by_name():
    registry = build_registry(extra=[_plugin("broken_short", ShortPrior)])
    with pytest.raises(ConformanceError) as info:
        conformance.check_component("prior", "broken-short-prior", registry=registry)
    detail = info.value.failures["shapes"]
    assert "prior mu (T=1, B=1): expected shape (1, 1, 4), got (1, 1, 3)" in detail
    assert "prior 'broken-short-prior' (model.prior, plugin 'broken_short')" in detail


def test_a_prior_that_makes_tensors_on_the_cpu_fails_device_by_name():
    registry = build_registry(extra=[_plugin("broken_host", HostConstantPrior)])
    with pytest.raises(ConformanceError) as info:
        conformance.check_component("prior", "broken-host-prior", registry=registry)
    assert set(info.value.failures) == {"device"}  # on the CPU it is a correct prior
    detail = info.value.failures["device"]
    assert "meta" in detail and "cpu" in detail
    assert "raised inside prior 'broken-host-prior', plugin 'broken_host'" in detail


def test_a_composition_whose_encoder_reads_padding_fails_and_blames_the_encoder():
    registry = build_registry(extra=[_plugin("broken_flip", WholeFlipEncoder)])
    model = {"base": "zforcing", "model": {"encoder": {"component": "broken-flip-encoder"}}}
    with pytest.raises(ConformanceError) as info:
        conformance.check_composition(model, name="flipped", registry=registry)
    assert set(info.value.failures) == {"padding"}
    assert str(info.value).startswith("composition 'flipped'")
    assert "look at encoder 'broken-flip-encoder' (model.encoder" in info.value.failures["padding"]


class NeverFits(LatentLSTMDecoder):
    """A decoder that refuses every base composition."""

    name = "tp-never-fits"

    def __init__(self, options, ctx) -> None:
        raise ConfigError(ctx.path, "needs a 7-dimensional widget")


def test_a_component_that_fits_no_base_composition_is_skipped_with_reasons():
    registry = build_registry(extra=[_plugin("never_fits", NeverFits)])
    with pytest.raises(ConformanceSkip, match="tp-never-fits.*fits no base composition") as info:
        conformance.check_component(
            "decoder", "tp-never-fits", registry=registry, compositions=["zforcing", "rnn"]
        )
    reasons = str(info.value)
    assert "of composition 'zforcing'>: model.decoder: needs a 7-dimensional widget" in reasons
    assert "of composition 'rnn'>: model.encoder: missing slot" in reasons


# --------------------------------------------------------------------------- shrinking


def test_shrink_caps_size_options_leaves_switches_and_lets_overrides_win():
    comp = load_composition("zforcing")
    small = shrink(comp)
    decoder = small.slots["decoder"].options
    assert small.latent_dim == 4
    assert decoder.hidden < 20 and decoder.embed < 20 and decoder.hidden != decoder.embed
    assert decoder.emission_hidden == 0 and decoder.cond_ln is False  # 0 means off: kept
    assert small.aux["reconstruction"].options.hidden < 20
    assert shrink(comp, overrides=["model.decoder.hidden=21"]).slots["decoder"].options.hidden == 21
    assert [is_size_option(n) for n in ("emb_dim", "n_units", "cond_mlp", "layers", "z_force")] == [
        True, True, True, False, False,
    ]  # fmt: skip
