"""``seqvae config show`` / ``config validate`` and ``seqvae components --slot`` / ``NAME``:
a resolved composition printed as a valid composition file, a file checked without training,
and a component's options with their types, defaults and docs."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from seqvae.cli import main
from seqvae.composition import builtin_compositions, load_composition
from seqvae.describe import NO_DESCRIPTION, summary
from seqvae.resolve import resolve_composition
from seqvae.testing.data import write_demo_npz

BUILTINS = list(builtin_compositions())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def data_files(tmp_path):
    """A real-valued and a binary npz (the binary one makes resolution swap the likelihood)."""
    real = write_demo_npz(tmp_path / "real.npz", dims=3, steps=8)
    arrays = dict(np.load(real))
    binary = tmp_path / "binary.npz"
    np.savez(binary, **{k: (v > 0).astype(np.float32) if k[0] in "ux" else v for k, v in arrays.items()})
    return {"real": real, "binary": binary}


def _npz(path):
    from seqvae.cli import open_dataset

    return open_dataset("npz", str(path))


@pytest.mark.parametrize("name", BUILTINS)
def test_show_prints_a_composition_that_resolves_to_the_same(name, capsys, tmp_path, data_files):
    status, out, _ = run(capsys, "config", "show", name)
    assert status == 0
    shown = tmp_path / f"{name}.yaml"
    shown.write_text(out)
    assert load_composition(str(shown)).to_dict() == load_composition(name).to_dict()
    assert run(capsys, "config", "validate", str(shown))[0] == 0
    for kind, path in data_files.items():  # with a data set: as train resolves both
        status, out, err = run(capsys, "config", "show", name, "--dataset", "npz", "--data", str(path))
        assert status == 0, err
        resolved = tmp_path / f"{name}-{kind}.yaml"
        resolved.write_text(out)
        dataset = _npz(path)
        again = resolve_composition(str(resolved), dataset, "npz").to_dict()
        assert again == resolve_composition(name, dataset, "npz").to_dict()
        if kind == "binary":
            assert again["model"]["likelihood"]["component"] == "bernoulli"


def test_show_applies_set_and_presets(capsys, data_files):
    status, out, _ = run(capsys, "config", "show", "zforcing", "--set", "model.prior.hidden=7")
    assert status == 0 and "  prior:\n    component: gaussian-mlp\n    hidden: 7\n" in out
    assert run(capsys, "config", "show", "zforcing", "--preset", "paper")[2].startswith(
        "seqvae: error: --preset needs --dataset")


def test_validate_refuses_a_bad_file_in_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: zforcing\nmodel:\n  prior: {hidden: abc}\n")
    status, out, err = run(capsys, "config", "validate", str(bad))
    assert status == 2 and out == ""
    assert err == f"seqvae: error: {bad}: model.prior.hidden: expected int, got 'abc'\n"


def test_validate_with_a_data_set_builds_the_model_on_the_meta_device(capsys, data_files):
    status, out, _ = run(capsys, "config", "validate", "vrnn", "--dataset", "npz", "--data", str(data_files["real"]))
    assert status == 0 and "builds for 'npz' (3 features per step" in out


def test_components_of_one_slot_show_their_options(capsys):
    status, out, _ = run(capsys, "components", "--slot", "prior")
    assert status == 0 and out.startswith("prior:\n") and "decoder:" not in out
    assert "hidden: int = 512" in out and "Hidden layers (leaky ReLU 1/3 clamped to [-3, 3])." in out


def test_one_component_shows_description_and_options(capsys):
    status, out, _ = run(capsys, "components", "npz")
    assert status == 0 and out.startswith("dataset npz  (plugin seqvae:npz-dataset;")
    assert "support: str or None = null" in out and "--data-option KEY=VALUE" in out
    status, _, err = run(capsys, "components", "gausian")
    assert status == 2 and "did you mean 'gaussian'" in err
    status, _, err = run(capsys, "components", "--slot", "priors")
    assert status == 2 and "did you mean 'prior'?" in err


def test_a_data_set_without_a_docstring_is_described_all_the_same(tmp_path, monkeypatch, capsys):
    """The issue's case: an npz subclass with another support, loaded through SEQVAE_PLUGINS."""
    (tmp_path / "my_binary.py").write_text(textwrap.dedent('''
        from seqvae import hookimpl
        from seqvae_plugins.npz_dataset import NpzDataset

        class BinaryNpz(NpzDataset):
            name = "binary-npz"
            support = "binary"

        @hookimpl
        def seqvae_register(registry):
            registry.add(BinaryNpz)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SEQVAE_PLUGINS", "my_binary")
    try:
        status, out, _ = run(capsys, "components", "--slot", "dataset")
    finally:
        sys.modules.pop("my_binary", None)
    row = next(line for line in out.splitlines() if line.startswith("  binary-npz "))
    assert row.split(None, 2)[1:] == ["my_binary", "Pre-framed sequences from one ``.npz`` file; binary or real "
                                      "values read from the file. (inherited from npz)"]


def test_a_description_falls_back_to_the_module_then_says_what_is_missing(monkeypatch):
    import types

    module = types.ModuleType("documented_plugin", "Priors of mine.\n\nMore text.")
    monkeypatch.setitem(sys.modules, "documented_plugin", module)
    for name, expected in (("documented_plugin", "Priors of mine."), ("undocumented_plugin", NO_DESCRIPTION)):
        namespace = {"__name__": name}
        exec("from seqvae.slots import Prior\nclass Bare(Prior):\n    name = 'bare'\n", namespace)
        assert summary(namespace["Bare"]) == expected


@pytest.mark.parametrize(("name", "sets"), [
    ("rnn", ["model.decoder.hidden=8"]),
    ("vrnn", ["model.latent_dim=3", "model.decoder.hidden=8", "model.encoder.hidden=8", "model.prior.hidden=8"]),
])  # fmt: skip
def test_train_on_the_shown_file_runs_and_writes_the_same_composition(name, sets, capsys, tmp_path, data_files):
    import yaml

    data = ["--dataset", "npz", "--data", str(data_files["real"])]
    status, out, _ = run(capsys, "config", "show", name, *data, *[a for s in sets for a in ("--set", s)])
    assert status == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    status, _, err = run(capsys, "train", "--model", str(shown), *data, "--max-steps", "1", "--out", str(tmp_path / "run"))
    assert status == 0, err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == yaml.safe_load(out)
