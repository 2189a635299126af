"""Training end to end on a small npz data set."""

import json

import pytest
from seqvae_plugins.npz_dataset import NpzDataset

from seqvae.train import train
from tests.conftest import tiny


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_few_hundred_steps_lower_the_loss(toy_npz, tmp_path):
    comp = tiny("zforcing-noaux", "objective.kl_weight=1.0", "train.log_every=25", "train.lr=3e-3")
    result = train(comp, NpzDataset(toy_npz, None), tmp_path / "run", max_steps=300, seed=0, progress=False)
    losses = _losses(tmp_path / "run")
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 0.25 * abs(first), losses
    assert result.valid["elbo"] > -first  # validation ELBO better than the loss we started from


def test_the_same_seed_gives_the_same_loss(toy_npz, tmp_path):
    comp = tiny("zforcing", "train.log_every=5")
    runs = [train(comp, NpzDataset(toy_npz, None), tmp_path / f"run{i}", max_steps=10, seed=seed, progress=False)
            for i, seed in enumerate((7, 7, 8))]  # fmt: skip
    a, b, c = (_losses(tmp_path / f"run{i}") for i in range(3))
    assert a == b and runs[0].valid == runs[1].valid
    assert a != c
