"""YAML compositions: built-ins, user files, inheritance, overrides and the errors they give."""

import pytest
import yaml

from seqvae.composition import build_model, load_composition, validate
from seqvae.errors import ConfigError, UserError
from seqvae.registry import default_registry
from tests.conftest import tiny


def test_builtin_zforcing_has_the_reference_defaults():
    comp = load_composition("zforcing")
    assert comp.latent_dim == 256
    assert comp.slots["decoder"].component == "latent-lstm"
    assert (comp.slots["decoder"].options.embed, comp.slots["decoder"].options.hidden) == (512, 1024)
    assert comp.slots["encoder"].options.mlp == 512 and comp.slots["prior"].options.hidden == 512
    assert (comp.train.lr, comp.train.adam_eps, comp.train.clip, comp.train.batch_size) == (1e-3, 1e-5, 100.0, 32)
    assert comp.objective.kl_weight.start == 0.2 and comp.objective.kl_weight.step == 5e-5
    assert set(comp.aux) == {"reconstruction", "bwd"}


def test_noaux_variant_drops_the_reconstruction_cost_by_inheritance():
    comp = load_composition("zforcing-noaux")
    assert set(comp.aux) == {"bwd"}
    assert comp.latent_dim == 256


def test_command_line_overrides_reach_options_with_types():
    comp = load_composition("zforcing", ["model.decoder.hidden=256", "train.lr=3e-4", "model.decoder.cond_ln=true",
                                         "model.aux.reconstruction.cost=l2", "model.aux.bwd=null"])
    assert comp.slots["decoder"].options.hidden == 256 and comp.slots["decoder"].options.cond_ln is True
    assert comp.train.lr == 3e-4 and comp.aux["reconstruction"].options.cost == "l2" and "bwd" not in comp.aux


def test_user_yaml_composes_registered_components_and_inherits(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "base: zforcing\n"
        "model:\n  latent_dim: 32\n  decoder: {hidden: 64}\n"
        "  aux: {reconstruction: {z_force: true, weight: {start: 0.1, end: 1.0, step: 1e-3}}}\n"
        "objective:\n  kl_weight: 1.0\n"
    )
    comp = load_composition(str(path))
    assert comp.name == "mine" and comp.latent_dim == 32 and comp.slots["decoder"].options.hidden == 64
    assert comp.slots["decoder"].options.embed == 512  # inherited
    assert comp.aux["reconstruction"].options.z_force is True
    assert comp.objective.kl_weight.at(10**6) == 1.0
    assert comp.aux["reconstruction"].weight.at(100) == pytest.approx(0.2)


def test_resolved_config_round_trips():
    comp = tiny("zforcing", "model.decoder.cond_ln=true")
    again = validate(yaml.safe_load(yaml.safe_dump(comp.to_dict())), default_registry())
    assert again.to_dict() == comp.to_dict()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.prior.hidden=abc"], "model.prior.hidden: expected int, got 'abc'"),
        (["model.prior.hiden=3"], "model.prior.hiden: unknown option; did you mean 'hidden'?"),
        (["model.decoder.component=latent-lstn"], "model.decoder.component: unknown decoder 'latent-lstn'; did you mean 'latent-lstm'"),
        (["model.prior=null"], "model.prior: missing slot: decoder 'latent-lstm' draws latents"),
        (["model.likelihood=null"], "model.likelihood: missing slot"),
        (["model.aux.reconstruction.cost=l1"], "model.aux.reconstruction.cost: expected one of 'gaussian', 'l2', got 'l1'"),
        (["model.aux.reconstruction.weight.strat=1"], "model.aux.reconstruction.weight.strat: unknown option; did you mean 'start'?"),
        (["objective.aux_weights=1"], "objective.aux_weights: unknown option"),
        (["model.decoder.cond_ln=maybe"], "model.decoder.cond_ln: expected bool, got 'maybe'"),
        (["model.latent_dim=0"], "model.latent_dim: decoder 'latent-lstm' needs latent_dim >= 1"),
        (["train.batch_size=0"], "train: batch_size: expected a positive finite number"),
        (["model.decoder.hidden"], "expected KEY=VALUE"),
    ],
)
def test_bad_compositions_fail_with_the_yaml_path(overrides, message):
    with pytest.raises(UserError) as error:
        load_composition("zforcing", overrides)
    assert message in str(error.value)


def test_errors_name_the_user_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  decoder: {component: latent-lstm, hidden: many}\n  likelihood: {component: gaussian}\n")
    with pytest.raises(ConfigError) as error:
        load_composition(str(path))
    assert str(error.value) == f"{path}: model.decoder.hidden: expected int, got 'many'"
    path.write_text("model: [\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_composition(str(path))


def test_unknown_model_name_suggests_builtins():
    with pytest.raises(UserError, match="unknown model 'zforcin'; did you mean 'zforcing'"):
        load_composition("zforcin")


def test_dimensions_that_do_not_fit_fail_at_build_with_the_slot_path(tmp_path):
    from seqvae.errors import ConfigError

    comp = load_composition("zforcing", ["model.likelihood.component=categorical", "model.likelihood.classes=5"])
    with pytest.raises(ConfigError, match=r"model.likelihood: expects class indices with feature size 1; the data has 3"):
        build_model(comp, x_dim=3)


def test_switching_a_component_drops_the_old_components_options(tmp_path):
    comp = load_composition("zforcing", ["model.likelihood.component=bernoulli"])
    assert comp.slots["likelihood"].component == "bernoulli"
    path = tmp_path / "binary.yaml"
    path.write_text("base: zforcing\nmodel:\n  likelihood: {component: categorical, classes: 7}\n"
                    "  aux: {bwd: {component: summary-reconstruction}}\n")
    comp = load_composition(str(path))
    assert comp.slots["likelihood"].options.classes == 7
    assert comp.aux["bwd"].component == "summary-reconstruction" and comp.aux["bwd"].weight.at(0) == 0.0
