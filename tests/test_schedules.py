"""Schedules by update and by epoch, learning-rate decay, validation by epoch: one mechanism."""

import json
import math

import pytest
import torch

from seqvae.composition import load_composition
from seqvae.errors import ConfigError
from seqvae.schedules import Decay, Progress, Schedule, progress
from seqvae.testing.data import write_demo_npz
from seqvae.train import train
from tests.conftest import TINY


def test_schedule_by_epoch_moves_with_the_fraction_of_epochs_done():
    kl = Schedule(start=0.2, end=1.0, step=0.04, per="epoch")  # SRNN: 0.2 -> 1 over 20 epochs
    assert kl.at(progress(0, 17)) == 0.2
    assert kl.at(progress(17 * 10, 17)) == pytest.approx(0.6)
    assert kl.at(progress(17 * 5 + 8, 17)) == pytest.approx(0.2 + 0.04 * (5 + 8 / 17))
    assert kl.at(progress(17 * 20, 17)) == 1.0 and kl.at(progress(10**6, 17)) == 1.0
    with pytest.raises(ValueError, match="by epoch"):
        kl.at(5)  # an update count alone does not say where the epoch is
    assert Schedule(start=0.5, end=0.5, per="epoch").at(3) == 0.5  # constant: no epoch needed


def test_decay_counts_whole_periods_after_its_start():
    decay = Decay(factor=1 / 1.2, every=1, start=20, per="epoch")
    assert [decay.at(Progress(0, e)) for e in (0, 19.9, 20.0, 20.99)] == [1.0] * 4
    assert decay.at(Progress(0, 21.0)) == pytest.approx(1 / 1.2)
    assert decay.at(Progress(0, 25.5)) == pytest.approx(1.2**-5)
    by_update = Decay(factor=0.98, every=1000, per="update")  # STCN
    assert by_update.at(Progress(999)) == 1.0 and by_update.at(Progress(2500)) == pytest.approx(0.98**2)
    assert Decay().at(Progress(10**9)) == 1.0


@pytest.mark.parametrize(
    "item, message",
    [("train.lr_decay.factor=0", "factor"), ("train.lr_decay.factor=1.5", "factor"),
     ("train.lr_decay.every=0", "every"), ("objective.kl_weight.per=fortnight", "per"),
     ("objective.kl_weight.step=-1", "step")],
)  # fmt: skip
def test_nonsense_schedules_are_refused_with_the_yaml_path(item, message):
    with pytest.raises(ConfigError, match=message):
        load_composition("zforcing", [*TINY, item])


def test_training_follows_the_epoch_schedules_and_validates_by_epoch(tmp_path):
    data = write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8)
    from seqvae_plugins.npz_dataset import NpzDataset

    dataset = NpzDataset(data, NpzDataset.Options())
    per_epoch = -(-len(dataset.split("train")) // 16)
    comp = load_composition("zforcing", [
        *TINY, "train.log_every=1", "train.eval_every=1", "train.eval_per=epoch",
        "train.lr_decay={factor: 0.5, every: 1, start: 1, per: epoch}",
        "objective.kl_weight={start: 0.2, end: 1.0, step: 0.4, per: epoch}",
    ])  # fmt: skip
    train(comp, dataset, tmp_path / "run", max_steps=4 * per_epoch, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    for record in log:
        epoch = (record["step"] - 1) / per_epoch  # the update that was logged started here
        assert record["epoch"] == pytest.approx(epoch)
        assert record["kl_weight"] == pytest.approx(min(1.0, 0.2 + 0.4 * epoch))
        assert record["lr"] == pytest.approx(1e-3 * (0.5 ** math.floor(epoch - 1 + 1e-9) if epoch >= 1 else 1.0))
    val = [json.loads(line) for line in (tmp_path / "run" / "val_log.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [per_epoch * k for k in (1, 2, 3, 4)]
    assert all(v["epoch"] == k for v, k in zip(val, (1, 2, 3, 4), strict=True))


@pytest.mark.parametrize(
    "item", ["train.log_every=0", "train.eval_every=-1", "train.lr=0", "train.adam_eps=-1e-8",
             "train.clip=-1", "train.batch_size=0", "train.val_iwae_k=-2", "train.bucket=-1", "train.lr=.inf"],
)  # fmt: skip
def test_train_options_that_make_no_sense_are_refused_with_the_yaml_path(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        load_composition("zforcing", [*TINY, item])


def test_evaluation_of_a_model_with_epoch_schedules_needs_no_epoch(tmp_path):
    """Evaluation reports the aux terms unweighted: a weight by epoch must not be read there."""
    from seqvae.composition import build_model
    from seqvae.objective import compute_terms
    from tests.conftest import batch

    comp = load_composition("zforcing", [*TINY, "model.aux.reconstruction.hidden=6",
                                         "model.aux.reconstruction.weight={start: 0.0, end: 0.01, step: 0.001, per: epoch}"])  # fmt: skip
    model = build_model(comp, 3)
    terms = compute_terms(model, model(*batch()), comp, training=False)
    assert "reconstruction" in terms.aux
    trained = compute_terms(model, model(*batch()), comp, update=progress(40, 4))
    assert torch.isfinite(trained.loss)
