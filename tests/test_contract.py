"""The declared slot contract (seqvae.contract): what undeclared components get, what a
decoder may declare, how summaries' reads are derived, and the fast path as a property every
composition has."""

from __future__ import annotations

import pytest
import torch
from seqvae_plugins.backward_lstm import BackwardLSTMEncoder
from seqvae_plugins.combiner import CombinerEncoder
from seqvae_plugins.latent_lstm import LatentLSTMDecoder
from torch import nn

from seqvae import contract, fused
from seqvae.composition import build_model, load_composition
from seqvae.contract import CURRENT, FUTURE, PAST, backward_scan, forward_scan
from seqvae.errors import ConfigError
from seqvae.registry import build_registry
from seqvae.slots import Decoder, Encoder
from seqvae.testing import ConformanceError, conformance
from tests.fake_plugins import plugin_module


class LegacyDecoder(LatentLSTMDecoder):
    """A decoder written before declarations: it declares nothing."""

    name = "legacy-decoder"
    cond_fields = Decoder.cond_fields
    context_fields = Decoder.context_fields


class LegacyEncoder(BackwardLSTMEncoder):
    """An encoder written before declarations: its summary is undeclared."""

    name = "legacy-encoder"
    summary_reads = Encoder.summary_reads


def test_components_that_declare_nothing_are_taken_on_trust():
    registry = build_registry(extra=[plugin_module("legacy", LegacyDecoder, LegacyEncoder)])
    # the old convention: z_{t-1} is the first latent_dim entries of an undeclared cond_t
    comp = load_composition("dkf", ["model.decoder.component=legacy-decoder", "model.decoder.hidden=12",
                                    "model.latent_dim=4"], registry=registry)  # fmt: skip
    model = build_model(comp, 3, registry)
    assert model.encoder.z_prev == slice(0, 4)
    comp = load_composition("zforcing", ["model.encoder.component=legacy-encoder"], registry=registry)
    build_model(comp, 3, registry)  # backward-lm cannot tell what the summary read: not refused


class SeesTheTarget(LatentLSTMDecoder):
    """Broken: declares features of x_t in cond_t, which the prior reads."""

    name = "sees-the-target"

    @classmethod
    def cond_fields(cls, options, ctx):
        return {"x_t": options.hidden}


class MiscountedDecoder(LatentLSTMDecoder):
    """Broken: its declared fields do not add up to cond_dim."""

    name = "miscounted"

    @classmethod
    def cond_fields(cls, options, ctx):
        return {"h_prev": options.hidden, "z_prev": ctx.z_dim}


@pytest.mark.parametrize("cls, message", [
    (SeesTheTarget, "cond_fields holds 'x_t', which has read x_t; the prior reads cond_t, so it must not"),
    (MiscountedDecoder, "cond_fields [h_prev (1024), z_prev (256)] add up to 1280, but cond_dim is 1024"),
])  # fmt: skip
def test_a_decoder_declaration_that_contradicts_the_decoder_is_refused(cls, message):
    registry = build_registry(extra=[plugin_module("broken_declaration", cls)])
    comp = load_composition("zforcing", [f"model.decoder.component={cls.name}"], registry=registry)
    with pytest.raises(ConfigError, match="model.decoder.component: decoder") as info:
        build_model(comp, 3, registry)
    assert message in str(info.value)


def test_what_a_summary_has_read_follows_from_its_inputs_and_direction():
    assert backward_scan({CURRENT}) == {CURRENT, FUTURE}  # b_t over x_t..x_T
    assert forward_scan({CURRENT}) == {PAST, CURRENT}  # a_t over x_1..x_t
    assert backward_scan({CURRENT, PAST}) == {PAST, CURRENT, FUTURE}  # over [d_t, x_t]: d_{t+1} read x_t
    assert contract.field_reads({"h_prev": 3, "x_t": 2}) == {PAST, CURRENT}
    assert contract.field_reads(None) is None


def test_z_prev_is_found_by_name_in_cond_t():
    assert contract.field_slice({"d_t": 5, "z_prev": 3}, "z_prev", 3) == slice(5, 8)
    model = build_model(load_composition("srnn", ["model.latent_dim=3", "model.decoder.hidden=5"]), 3)
    assert model.encoder.z_prev == slice(0, 3)


# --------------------------------------------------------------------------- the fast path


class PlainLinearCombiner(CombinerEncoder):
    """Broken: its in-loop layer is a plain nn.Linear, outside the fast path."""

    name = "plain-linear-combiner"

    def __init__(self, options, ctx) -> None:
        super().__init__(options, ctx)
        self.from_cond = nn.Linear(self.from_cond.in_features, self.from_cond.out_features)


class LoopSensitiveEncoder(BackwardLSTMEncoder):
    """Broken: computes something else inside the fast step loop."""

    name = "loop-sensitive"

    def posterior(self, cond, features, prior=None):
        mu, logvar = super().posterior(cond, features, prior)
        return (mu * 1.001 if fused.in_step_loop() else mu), logvar


@pytest.mark.parametrize("cls, base, message", [
    (PlainLinearCombiner, "dkf", "encoder.from_cond (encoder 'plain-linear-combiner'"),
    (LoopSensitiveEncoder, "zforcing", "the fast path and plain autograd disagree: ELBO"),
])  # fmt: skip
def test_a_component_off_the_fast_path_fails_the_fast_path_property_by_name(cls, base, message):
    registry = build_registry(extra=[plugin_module("off_the_fast_path", cls)])
    with pytest.raises(ConformanceError) as info:
        conformance.check_component("encoder", cls.name, registry=registry, compositions=[base])
    assert set(info.value.failures) == {"fast-path"}
    assert message in info.value.failures["fast-path"]


def test_the_fast_path_switch_acts_where_the_loop_runs():
    model = build_model(load_composition("dkf", ["model.latent_dim=2", "model.encoder.hidden=6"]), 3)
    seen = []
    hook = model.encoder.from_cond.register_forward_pre_hook(lambda *_: seen.append(fused.in_step_loop()))
    u = x = torch.zeros(3, 2, 3)
    for fast in (True, False):
        model.fast_path = fast
        model(u, x, torch.ones(3, 2))
    hook.remove()
    assert seen == [True] * 3 + [False] * 3
