"""Shared fixtures: tiny compositions and a small npz data set written by the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seqvae.composition import Composition, build_model, load_composition
from seqvae.model import SequenceModel
from seqvae.testing.data import write_demo_npz


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and on a loaded machine several threads spin
    against each other (tens of times slower). ``$OMP_NUM_THREADS`` says so too: the command
    line run in this process (``seqvae.cli.main``) sets its threads from it, as do the
    subprocesses tests start, so that a run in here and one in a subprocess compute alike.
    Per test: a test whose command line asks for other threads (``--threads 2``) leaves the
    next one on one thread again."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


TINY = [
    "model.latent_dim=4", "model.decoder.embed=8", "model.decoder.hidden=12",
    "model.encoder.embed=8", "model.encoder.hidden=10", "model.encoder.mlp=9",
    "model.prior.hidden=7", "train.batch_size=16", "train.log_every=10", "train.eval_every=0",
]  # fmt: skip
"""Small sizes for every slot of the built-in Z-Forcing compositions."""


def tiny(name: str = "zforcing", *overrides: str) -> Composition:
    extra = ["model.aux.reconstruction.hidden=6"] if name == "zforcing" else []
    return load_composition(name, [*TINY, *extra, *overrides])


def tiny_model(name: str = "zforcing", *overrides: str, x_dim: int = 3, seed: int = 0) -> tuple[SequenceModel, Composition]:
    torch.manual_seed(seed)
    comp = tiny(name, *overrides)
    return build_model(comp, x_dim), comp


def batch(steps: int = 6, size: int = 2, x_dim: int = 3, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """A time-major batch (u, x, mask) with u_t = x_{t-1} and a full mask."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(steps + 1, size, x_dim, generator=g)
    return seq[:-1], seq[1:], torch.ones(steps, size)


def sample_then_eval(checkpoint: Path, npz: Path, out: Path, capsys, iwae_k: int = 4) -> dict:
    """``seqvae sample`` from ``checkpoint`` (3 sequences of 5 steps into ``out``), then
    ``seqvae eval --json`` on ``npz``: its result, the IWAE bound at or above the ELBO."""
    import json

    from seqvae.cli import main

    assert main(["sample", str(checkpoint), "--n", "3", "--steps", "5", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--dataset", "npz", "--data", str(npz), "--iwae-k", str(iwae_k), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # nats per sequence of a log-likelihood: higher is better, IWAE above the ELBO
    assert result["iwae"] >= result["elbo"]
    return result


@pytest.fixture
def toy_npz(tmp_path: Path) -> Path:
    return write_demo_npz(tmp_path / "toy.npz", dims=3, steps=12)


@pytest.fixture(autouse=True)
def _data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test prepares data sets into its own cache, never the user's, and finds no data
    through $SEQVAE_DATA unless it sets it."""
    cache = tmp_path / "seqvae-cache"
    monkeypatch.setenv("SEQVAE_CACHE", str(cache))
    monkeypatch.delenv("SEQVAE_DATA", raising=False)
    return cache


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory):
    """A fresh venv with seqvae installed from this checkout (see tests/venvs.py)."""
    from tests.venvs import make_venv

    return make_venv(tmp_path_factory.mktemp("fresh") / "venv")
