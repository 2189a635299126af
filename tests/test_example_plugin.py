"""examples/seqvae-example-plugin installed with pip into a fresh environment, as a user
installs a plugin: its own tests and the conformance suite pass there, ``seqvae components``
names it as the provider of its components, and a composition that uses them trains."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.venvs import run

pytestmark = pytest.mark.slow


def test_the_installed_package_is_imported_from_the_venv(example_venv):
    venv, _ = example_venv
    probe = "import seqvae, seqvae_example; print(seqvae_example.__file__)"
    where = run(venv.python, "-c", probe, env=venv.env(), cwd=venv.root).stdout.strip()
    assert where.startswith(str(venv.root)) and "site-packages" in where


def test_its_own_tests_and_the_conformance_suite_pass_installed(example_venv):
    venv, source = example_venv
    # run from outside the source folder, so that only the installed package can be imported
    done = run(venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", source / "tests",
               env=venv.env(), cwd=venv.root)  # fmt: skip
    assert re.search(r"\b5 passed\b", done.stdout), done.stdout


def test_components_names_the_package_and_the_descriptions(example_venv):
    venv, _ = example_venv
    out = run(venv.bin / "seqvae", "components", env=venv.env(), cwd=venv.root).stdout
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines() if line.startswith("  ")}
    assert rows["poe"] == ["seqvae-example-plugin:poe-prior",
                           "Product of Gaussian experts of cond_t and N(0, I): precisions add, means are weighted."]
    assert rows["csv-sequences"] == ["seqvae-example-plugin:csv-sequences",
                                     "Real-valued sequences, one per CSV file: a row per step, a column per feature."]
    detail = run(venv.bin / "seqvae", "components", "poe", env=venv.env(), cwd=venv.root).stdout
    assert "experts: int = 4" in detail and "Gaussian experts multiplied together" in detail


def test_a_composition_using_it_trains(example_venv):
    venv, source = example_venv
    data = venv.root / "sines"
    run(venv.python, "-m", "seqvae_example.synthetic", data, "8", env=venv.env(), cwd=venv.root)
    out = venv.root / "run"
    train = [venv.bin / "seqvae", "train", "--model", source / "zforcing-poe.yaml", "--dataset", "csv-sequences",
             "--data", data, "--max-steps", "3", "--set", "train.batch_size=4", "--out", out]  # fmt: skip
    done = run(*train, env=venv.env(), cwd=venv.root)
    assert "trained zforcing-poe for 3 steps" in done.stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["prior"] == {"component": "poe", "experts": 4, "hidden": 32}
