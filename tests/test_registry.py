"""Plugin loading: built-ins through entry points, clashes, unknown names, broken plugins."""

import types
import warnings

import pytest

from seqvae import hookimpl
from seqvae.errors import UserError
from seqvae.registry import PluginLoadWarning, build_registry, default_registry
from seqvae.slots import Prior


def _plugin(name: str, *classes: type) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def seqvae_register(registry):
        for cls in classes:
            registry.add(cls)

    module.seqvae_register = seqvae_register
    return module


class MyPrior(Prior):
    """A third-party prior."""

    name = "my-prior"

    def forward(self, cond):
        raise NotImplementedError


class ClashingPrior(MyPrior):
    name = "gaussian-mlp"


def test_builtin_components_come_from_entry_points_with_their_provider():
    registry = default_registry()
    entry = registry.get("decoder", "latent-lstm")
    assert entry.provider == "seqvae:latent-lstm"
    assert entry.cls.__module__ == "seqvae_plugins.latent_lstm"
    assert {e.name for e in registry.entries("dataset")} >= {"npz"}


def test_third_party_plugin_registers_through_the_same_hook():
    registry = build_registry(extra=[_plugin("acme_priors", MyPrior)])
    entry = registry.get("prior", "my-prior")
    assert entry.cls is MyPrior and entry.provider == "acme_priors"


def test_duplicate_name_is_an_error_naming_both_providers():
    with pytest.raises(UserError) as error:
        build_registry(extra=[_plugin("acme_clash", ClashingPrior)])
    message = str(error.value)
    assert "prior 'gaussian-mlp' is registered twice" in message
    assert "seqvae:gaussian-mlp-prior" in message and "acme_clash" in message


def test_unknown_name_lists_close_matches():
    with pytest.raises(UserError, match=r"unknown decoder 'latent-lstn'; did you mean 'latent-lstm'"):
        default_registry().get("decoder", "latent-lstn")


def test_a_broken_plugin_is_a_warning_naming_it_and_the_rest_still_loads(monkeypatch, tmp_path):
    (tmp_path / "acme_broken.py").write_text("raise ZeroDivisionError('half-written plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SEQVAE_PLUGINS", "acme_broken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = build_registry()
    assert "ZeroDivisionError: half-written plugin" in registry.failed["acme_broken"]
    assert any(issubclass(w.category, PluginLoadWarning) and "acme_broken" in str(w.message) for w in caught)
    assert registry.get("decoder", "latent-lstm")
