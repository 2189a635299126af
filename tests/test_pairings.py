"""Every pairing of registered components either builds and conforms or is refused at build
time by a message naming both parts (issue 13): what cond_t, the decoder's context and the
encoder's summary hold is declared, and the builder checks each part against the others."""

from __future__ import annotations

import time

import pytest

from seqvae.composition import build_model, load_composition, validate
from seqvae.errors import ConfigError
from seqvae.registry import default_registry
from seqvae.testing import conformance, shrink
from seqvae.testing.checks import CHECKS
from seqvae.testing.shrink import required_options
from seqvae.testing.subjects import Case

REGISTRY = default_registry()
QUICK = [check for check in CHECKS if check.name in ("shapes", "gradients", "fast-path")]
"""A reduced suite per pairing; the built-in compositions get every check (test_conformance)."""


def _names(kind: str) -> list[str]:
    return [entry.name for entry in REGISTRY.entries(kind)]


def _latent(decoder: str) -> bool:
    return REGISTRY.get("decoder", decoder).cls.uses_latent


def _pairings() -> list[tuple[str, str | None, str | None, str | None]]:
    """(decoder, encoder, prior, aux): every decoder x encoder x prior, and every auxiliary
    objective with every decoder x encoder (the prior that reads nothing)."""
    latent = [d for d in _names("decoder") if _latent(d)]
    out = [(d, e, p, None) for d in latent for e in _names("encoder") for p in _names("prior")]
    out += [(d, e, "standard-normal", a) for d in latent for e in _names("encoder") for a in _names("aux")]
    out += [(d, None, None, a) for d in _names("decoder") if not _latent(d) for a in [None, *_names("aux")]]
    return out


def _spec(kind: str, name: str) -> dict:
    return {"component": name, **required_options(REGISTRY.get(kind, name).cls)}


def _composition(decoder, encoder, prior, aux):
    model = {"latent_dim": 4 if encoder else 0, "likelihood": {"component": "gaussian"},
             "decoder": _spec("decoder", decoder)}  # fmt: skip
    if REGISTRY.get("decoder", decoder).cls.reads_static:  # it needs a sequence-level latent
        model["static"] = _spec("static", _names("static")[0])
    if encoder:
        model.update(encoder=_spec("encoder", encoder), prior=_spec("prior", prior))
    if aux:
        model["aux"] = {"extra": _spec("aux", aux)}
    return shrink(validate({"model": model}, REGISTRY, name="pairing"), REGISTRY)


PAIRINGS = _pairings()
OUTCOMES: dict[tuple, str] = {}


@pytest.mark.parametrize("pairing", PAIRINGS, ids=lambda p: "/".join(n or "-" for n in p))
def test_every_pairing_builds_and_conforms_or_is_refused_naming_both(pairing):
    decoder, encoder, prior, aux = pairing
    comp = _composition(*pairing)
    parts = {"decoder": decoder, "encoder": encoder, "prior": prior, "aux.extra": aux}
    try:
        build_model(comp, 3, REGISTRY)
    except ConfigError as error:
        refused = error.path.removeprefix("model.").removesuffix(".component")
        message = str(error)
        assert "does not fit" in message and "Fix: " in message, message
        assert f"'{parts[refused]}' does not fit" in message, message
        partners = [f"{slot} '{name}' (model.{slot}.component)" for slot, name in parts.items()
                    if name and slot != refused and not slot.startswith("aux")]  # fmt: skip
        assert any(p in message for p in partners) or "which has no encoder" in message, message
        OUTCOMES[pairing] = "refused"
        return
    conformance.run_all(Case("composition", "pairing", REGISTRY, source=comp), QUICK)
    OUTCOMES[pairing] = "conforms"


def test_pairings_are_checked_quickly_and_both_outcomes_occur():
    start = time.perf_counter()
    for pairing in PAIRINGS[:6]:
        test_every_pairing_builds_and_conforms_or_is_refused_naming_both(pairing)
    per_pairing = (time.perf_counter() - start) / 6
    assert per_pairing * len(PAIRINGS) < 30, per_pairing
    assert len(PAIRINGS) >= 70
    if len(OUTCOMES) == len(PAIRINGS):  # the parametrised test ran in this session
        assert {"refused", "conforms"} == set(OUTCOMES.values())


def _refusal(name: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        build_model(load_composition(name, list(overrides)), 3)
    return str(info.value)


def test_a_combiner_under_a_decoder_whose_cond_holds_no_previous_latent_is_refused():
    # latent-lstm's cond_t is h_{t-1}; the combiner would read its first units as z_{t-1}
    message = _refusal("zforcing", "model.encoder.component=combiner")
    assert "model.encoder.component: encoder 'combiner' does not fit decoder 'latent-lstm' (model.decoder.component)" in message
    assert "it reads z_prev (z_{t-1}) from cond_t, which holds [h_prev (1024)]" in message
    assert "set model.encoder.cond=all" in message and "model.decoder.component: state-space" in message
    build_model(load_composition("zforcing", ["model.encoder.component=combiner", "model.encoder.cond=all"]), 3)


def test_a_backward_lm_on_a_summary_that_has_read_its_target_is_refused():
    # forward-lstm's a_{t+1} has read x_1..x_{t+1}: it would predict x_t from a state holding it
    message = _refusal("storn", "model.aux.bwd.component=backward-lm")
    assert "model.aux.bwd.component: auxiliary objective 'backward-lm' does not fit encoder 'forward-lstm'" in message
    assert "has not read x_{<t}, and the encoder's has read x_{<t}, x_t" in message
    assert "model.encoder.component: backward-lstm" in message
    # srnn-posterior's a_{t+1} has read x_t through d_{t+1}
    assert "does not fit encoder 'srnn-posterior'" in _refusal("srnn", "model.aux.bwd.component=backward-lm")
    build_model(load_composition("zforcing"), 3)  # backward-lstm's b_{t+1} has read x_{t+1}.. only


def test_a_filtering_posterior_on_a_context_without_x_t_is_refused():
    message = _refusal("srnn", "model.encoder.component=filtering-mlp")
    assert "it reads x_t (phi(x_t)) from context, which holds [d_t (1024)]" in message
    assert "set model.encoder.features=own" in message
