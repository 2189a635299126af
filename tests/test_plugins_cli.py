"""Plugins that break: named and skipped (or fatal when strict), disabled by name, and listed by
``seqvae plugins`` with their versions and what they register."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import textwrap

import pytest

from seqvae.cli import main
from seqvae.registry import PluginError, build_registry, default_registry

HEADER = """
from dataclasses import dataclass
from seqvae import hookimpl
from seqvae.slots import Prior

class Good(Prior):
    name = "{module}-good"
    def forward(self, cond):
        raise NotImplementedError
"""

INVALID = {
    "wrong_slot": ("class Bad(Good):\n    slot = 'posterior'\n    name = 'x'", "has slot 'posterior'; expected a subclass of a slot base"),
    "no_name": ("class Bad(Good):\n    name = ''", "has no usable class attribute `name`"),
    "duplicate": ("class Bad(Good):\n    name = 'gaussian-mlp'", "prior 'gaussian-mlp' is registered twice: by plugin 'seqvae:gaussian-mlp-prior'"),
    "plain_options": ("class Bad(Good):\n    name = 'bad'\n    class Options:\n        hidden = 3", "Options: expected a dataclass"),
    "odd_option": ("class Bad(Good):\n    name = 'bad'\n    @dataclass\n    class Options:\n        size: tuple = (1, 2)",
                   "option 'size' has type tuple, which options cannot hold"),
    "not_a_class": ("Bad = 'os.system'", "registry.add() expects a class, got 'os.system'"),
    "not_a_prior": ("class Bad:\n    slot = 'prior'\n    name = 'bad'", "does not subclass seqvae.slots.Prior"),
}  # fmt: skip


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Writes plugin modules into a folder on sys.path; forgets them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(module: str, body: str, register: str = "") -> str:
        code = HEADER.format(module=module) + textwrap.dedent(body) + "\n"
        if register:
            code += f"\n@hookimpl\ndef seqvae_register(registry):\n    {register}\n"
        (tmp_path / f"{module}.py").write_text(code)
        written.append(module)
        return module

    yield write
    for module in written:
        sys.modules.pop(module, None)


def test_a_plugin_that_raises_on_import_is_named_and_skipped_and_the_rest_works(plugins, capsys):
    plugins("acme_raises", "raise ZeroDivisionError('half-written plugin')")
    assert main(["--plugin", "acme_raises", "components"]) == 0
    captured = capsys.readouterr()
    assert "latent-lstm" in captured.out  # the built-ins still load
    assert "plugin 'acme_raises' failed to load and is skipped: ZeroDivisionError: half-written plugin (acme_raises.py, line" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("case", sorted(INVALID))
def test_a_plugin_registering_an_invalid_component_is_skipped_as_a_whole(plugins, case):
    body, message = INVALID[case]
    module = plugins(f"acme_{case}", body, register="registry.add(Good); registry.add(Bad)")
    registry = build_registry(modules=[module], strict=False)
    assert message in registry.failed[module] and "\n" not in registry.failed[module]
    assert registry.find("prior", f"{module}-good") is None  # nothing of a broken plugin is used
    assert registry.find("prior", "gaussian-mlp").provider == "seqvae:gaussian-mlp-prior"
    assert registry.plugins[module].error == registry.failed[module]
    with pytest.raises(PluginError, match=f"plugin {module!r} failed to load: .*{re.escape(message[:20])}"):
        build_registry(modules=[module], strict=True)


def test_a_valid_third_party_plugin_loads_with_what_it_registers(plugins, capsys):
    module = plugins("acme_fine", "", register="registry.add(Good)")
    assert main(["plugins", "--plugin", module, "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[module]["status"] == "loaded" and rows[module]["origin"] == "--plugin"
    assert rows[module]["registers"] == [{"kind": "prior", "name": "acme_fine-good"}]
    builtin = rows["seqvae:latent-lstm"]
    assert builtin["version"] == importlib.metadata.version("seqvae")
    assert builtin["registers"] == [{"kind": "decoder", "name": "latent-lstm"}] and builtin["error"] is None


def test_strict_plugins_make_a_broken_plugin_fatal_for_any_command(plugins, capsys, monkeypatch):
    plugins("acme_strict", "raise ImportError('needs acme-core')")
    for argv in (["--strict-plugins", "--plugin", "acme_strict", "models"],
                 ["models", "--plugin", "acme_strict", "--strict-plugins"]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("seqvae: error: plugin 'acme_strict' failed to load: ImportError: needs acme-core")
        assert "SEQVAE_DISABLE_PLUGINS=acme_strict" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("SEQVAE_STRICT_PLUGINS", "1")
    monkeypatch.setenv("SEQVAE_PLUGINS", "acme_strict")
    assert main(["models"]) == 2
    assert "plugin 'acme_strict' failed to load" in capsys.readouterr().err
    monkeypatch.setenv("SEQVAE_STRICT_PLUGINS", "0")
    assert main(["models"]) == 0


def test_plugins_lists_a_failed_plugin_with_its_one_line_error(plugins, capsys):
    plugins("acme_listed", "import acme_missing_dependency")
    assert main(["plugins", "--plugin", "acme_listed"]) == 0
    out = capsys.readouterr().out
    failed = out.split("failed, skipped (1):\n")[1].splitlines()[0]
    assert failed.startswith("  acme_listed") and "[--plugin]" in failed
    assert "ModuleNotFoundError: No module named 'acme_missing_dependency' (acme_listed.py, line" in failed
    loaded = out.split("loaded (")[1]
    assert "  seqvae:latent-lstm " in loaded and "\n    decoder latent-lstm\n" in loaded


def test_disabled_plugins_are_not_even_imported(plugins, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "imported"
    plugins("acme_marker", f"open({str(marker)!r}, 'w').close()", register="registry.add(Good)")
    monkeypatch.setenv("SEQVAE_PLUGINS", "acme_marker")
    monkeypatch.setenv("SEQVAE_DISABLE_PLUGINS", "acme_marker, seqvae:gmm-likelihood,nonesuch")
    registry = default_registry()
    assert registry.find("prior", "acme_marker-good") is None and registry.find("likelihood", "gmm") is None
    assert registry.find("likelihood", "gaussian") is not None and not marker.exists()
    assert main(["plugins", "--json"]) == 0
    captured = capsys.readouterr()
    status = {row["name"]: row["status"] for row in json.loads(captured.out)}
    assert status["acme_marker"] == status["seqvae:gmm-likelihood"] == "disabled"
    assert status["seqvae:likelihoods"] == "loaded"
    assert "$SEQVAE_DISABLE_PLUGINS names 'nonesuch', which is no plugin here" in captured.err
    monkeypatch.delenv("SEQVAE_DISABLE_PLUGINS")
    assert default_registry().find("prior", "acme_marker-good") is not None and marker.exists()


def test_a_duplicate_of_a_builtin_name_keeps_the_builtin(plugins, capsys):
    module = plugins("acme_clash", "class Clash(Good):\n    name = 'gaussian-mlp'", register="registry.add(Clash)")
    assert main(["--plugin", module, "components"]) == 0
    captured = capsys.readouterr()
    line = next(l for l in captured.out.splitlines() if l.split()[:1] == ["gaussian-mlp"])
    assert "seqvae:gaussian-mlp-prior" in line
    assert "registered twice" in captured.err and "acme_clash" in captured.err


def test_global_options_work_before_the_command(toy_npz, tmp_path, capsys):
    # argparse gives a subcommand's defaults the last word; --debug before the command used to be lost
    assert main(["--debug", "train", "--model", "zforcing", "--dataset", "npz", "--data", str(toy_npz),
                 "--out", str(tmp_path / "run"), "--set", "model.prior.hidden=abc"]) == 2  # fmt: skip
    assert "Traceback" in capsys.readouterr().err
