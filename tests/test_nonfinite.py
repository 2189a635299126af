"""Non-finite updates: skipped and counted, a run of them stops training, and no checkpoint ever
holds non-finite weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from seqvae_plugins.npz_dataset import NpzDataset

import seqvae.objective
import seqvae.train
from seqvae.composition import load_composition
from seqvae.errors import ConfigError, UserError
from seqvae.train import TrainingStopped, train
from tests.conftest import tiny


class NanGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def poison(monkeypatch, bad: dict[int, str]) -> None:
    """Training batch number ``i`` (0-based, skipped ones included) gets a NaN loss
    (``bad[i] == "loss"``) or a NaN gradient (``"grad"``); evaluation is left alone."""
    real = seqvae.objective.compute_terms  # what training calls (through BatchObjective)
    calls = iter(range(10**6))

    def compute_terms(*args, **kwargs):
        terms = real(*args, **kwargs)
        kind = bad.get(next(calls))
        if kind == "loss":
            terms.loss = terms.loss * math.nan
        elif kind == "grad":
            terms.loss = NanGradient.apply(terms.loss)
        return terms

    monkeypatch.setattr(seqvae.objective, "compute_terms", compute_terms)


class Writer:
    """Records add_scalar calls as a SummaryWriter would receive them."""

    def __init__(self):
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))

    def add_histogram(self, *args, **kwargs):
        pass


def _finite(checkpoint: dict) -> bool:
    tensors = [*checkpoint["model"].values()]
    tensors += [v for state in checkpoint["optimizer"]["state"].values() for v in state.values()]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def _records(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_a_nan_loss_or_gradient_skips_that_update_and_is_counted(toy_npz, tmp_path, monkeypatch):
    poison(monkeypatch, {3: "loss", 6: "grad"})
    out, writer = tmp_path / "run", Writer()
    comp = tiny("zforcing-noaux", "train.log_every=1")
    result = train(comp, NpzDataset(toy_npz, None), out, max_steps=10, progress=False, writer=writer)
    assert result.step == 10
    skipped = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]  # batch 3 is skipped before update 4, batch 6 before update 6
    assert [(r["step"], r["skipped_steps"]) for r in _records(out)] == list(zip(range(1, 11), skipped, strict=True))
    assert writer.scalars["train/skipped_steps"] == list(zip(range(1, 11), skipped, strict=True))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in _records(out))
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert _finite(last) and last["counters"] == {"skipped_steps": 2, "consecutive_skips": 0}
    assert last["position"]["batch"] == 12  # 10 updates and 2 skipped batches
    # Adam stepped 10 times, not 12: a skipped batch never reaches the optimiser
    assert {float(state["step"]) for state in last["optimizer"]["state"].values()} == {10.0}


def test_consecutive_skips_stop_the_run_naming_the_update_folder_and_last_checkpoint(toy_npz, tmp_path, monkeypatch):
    poison(monkeypatch, {i: "loss" for i in range(5, 100)})
    out = tmp_path / "run"
    comp = tiny("zforcing-noaux", "train.eval_every=2", "train.max_consecutive_skips=3")
    with pytest.raises(TrainingStopped) as stopped:
        train(comp, NpzDataset(toy_npz, None), out, max_steps=20, progress=False)
    assert isinstance(stopped.value, UserError)  # the command line: one line, exit status 2
    last_path = out / "checkpoints" / "last.pt"
    assert str(stopped.value) == (
        f"{out}: training stopped at update 6: 3 updates in a row had a non-finite loss or gradient norm "
        f"(the last: loss nan, gradient norm nan; train.max_consecutive_skips is 3); the last good checkpoint is "
        f"{last_path} (update 4); lower train.lr or set train.clip"
    )
    last = torch.load(last_path, weights_only=True)
    assert last["step"] == 4 and _finite(last)
    assert _finite(torch.load(out / "checkpoints" / "best.pt", weights_only=True))


def test_non_finite_weights_never_reach_a_checkpoint(toy_npz, tmp_path, monkeypatch):
    real_step = torch.optim.Adam.step
    updates = iter(range(10**6))

    def step(self, *args, **kwargs):  # update 3 is finite in loss and gradient, but blows up a weight
        result = real_step(self, *args, **kwargs)
        if next(updates) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run"
    comp = tiny("zforcing-noaux", "train.eval_every=1")
    with pytest.raises(TrainingStopped, match=r"the weights are not finite after update 3, so (last|best).pt was not written; "
                                              r"the last good checkpoint is .*last.pt \(update 2\)"):  # fmt: skip
        train(comp, NpzDataset(toy_npz, None), out, max_steps=10, progress=False)
    for name in ("last.pt", "best.pt"):
        checkpoint = torch.load(out / "checkpoints" / name, weights_only=True)
        assert checkpoint["step"] == 2 and _finite(checkpoint), name


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_consecutive_skips_must_be_positive(value):
    with pytest.raises(ConfigError, match="train: max_consecutive_skips: expected a positive"):
        load_composition("zforcing-noaux", [f"train.max_consecutive_skips={value}"])
