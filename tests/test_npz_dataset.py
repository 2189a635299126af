"""``npz``: support, likelihood and unit read from the file; NaN padding; content fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from seqvae_plugins.npz_dataset import NpzDataset, Options

from seqvae.cli import main
from seqvae.data import UNITS
from seqvae.errors import UserError
from seqvae.registry import default_registry
from tests.conftest import TINY

SPLITS = ("train", "valid", "test")


def likelihood(name: str) -> type:
    return default_registry().get("likelihood", name).cls


def layout(seq: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None) -> dict:
    """The npz arrays of sequences (N, T + 1, D) per split: u = seq[:, :-1], x = seq[:, 1:]
    (copies, so that u can be edited alone), and masks (default: a full mask_test)."""
    arrays = {}
    for split, s in seq.items():
        arrays[f"u_{split}"], arrays[f"x_{split}"] = s[:, :-1].copy(), s[:, 1:].copy()
    for split, mask in (masks or {"test": np.ones(seq["test"][:, 1:].shape[:2])}).items():
        arrays[f"mask_{split}"] = mask
    return arrays


def write_npz(path, seq: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None):
    np.savez(path, **layout(seq, masks))
    return path


def rolls(seed: int = 0, dims: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: (rng.random((n, 7, dims)) < 0.3).astype(np.float32) for s, n in zip(SPLITS, (4, 2, 3), strict=True)}


def test_only_0_and_1_is_binary_with_bernoulli_output_per_step(tmp_path):
    data = NpzDataset(write_npz(tmp_path / "rolls.npz", rolls()))
    assert (data.support, data.likelihood, data.unit, data.classes) == ("binary", "bernoulli", "nats per step", None)
    assert data.split("train").x.dtype == np.uint8 and data.x_dim == 5
    data.check_model(likelihood("bernoulli"))
    with pytest.raises(UserError, match="holds binary values; use --set model.likelihood.component=bernoulli"):
        data.check_model(likelihood("gaussian"))


def test_other_values_are_real_with_gaussian_output_per_sequence(toy_npz):
    data = NpzDataset(toy_npz)
    assert (data.support, data.likelihood, data.unit) == ("real", "gaussian", "nats per sequence")
    data.check_model(likelihood("gaussian"))
    with pytest.raises(UserError, match="'bernoulli' models binary values, but data set 'npz' holds real"):
        data.check_model(likelihood("bernoulli"))


def test_the_class_check_waits_for_the_file():
    # support is known only once the file is read: nothing to refuse before
    assert NpzDataset.support is None
    NpzDataset.check_support(likelihood("gaussian"))
    NpzDataset.check_support(likelihood("bernoulli"))


def test_options_override_what_is_inferred(tmp_path):
    path = write_npz(tmp_path / "rolls.npz", rolls())
    data = NpzDataset(path, Options(support="real", unit="nats per sequence"))
    assert (data.support, data.likelihood, data.unit) == ("real", "gaussian", "nats per sequence")
    assert NpzDataset(path, Options(unit="nats per image")).unit == "nats per image"
    with pytest.raises(UserError, match=f"unit='bits' is not a unit; expected one of {', '.join(UNITS)}"):
        NpzDataset(path, Options(unit="bits"))
    with pytest.raises(UserError, match="support='binar' is not a support; expected one of real, binary"):
        NpzDataset(path, Options(support="binar"))


def test_a_declared_support_the_values_contradict_is_an_error(tmp_path, toy_npz):
    seq = rolls()
    seq["valid"][1, 3, 2] = 0.5  # x_valid row 1, step 2
    path = write_npz(tmp_path / "half.npz", seq)
    with pytest.raises(UserError, match=r"half.npz: support=binary, but x_valid holds 0.5 \(row 1, step 2, feature 2\)"):
        NpzDataset(path, Options(support="binary"))
    assert NpzDataset(path).support == "real"
    with pytest.raises(UserError, match="support=categorical, but x_train has 3 features per step"):
        NpzDataset(toy_npz, Options(support="categorical"))


def test_categorical_ids_give_the_number_of_classes(tmp_path):
    rng = np.random.default_rng(0)
    seq = {s: rng.integers(0, 7, size=(3, 6, 1)).astype(np.float32) for s in SPLITS}
    seq["test"][0, 0, 0] = 9  # an input id (u only) counts too
    data = NpzDataset(write_npz(tmp_path / "ids.npz", seq), Options(support="categorical"))
    assert (data.likelihood, data.classes, data.unit) == ("categorical", 10, "perplexity")


def test_nan_on_padded_steps_is_zeroed_with_one_line(tmp_path, capsys):
    mask = np.ones((3, 6), np.float32)
    mask[0, 4:] = mask[2, 1:] = 0
    arrays = layout(rolls(), {"test": mask})
    clean = arrays["u_test"].copy()
    arrays["u_test"][mask == 0] = np.nan  # NaN after each sequence's end, as in SRNN's files
    path = tmp_path / "padded.npz"
    np.savez(path, **arrays)
    data = NpzDataset(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"npz: {path}: u_test has NaN/Inf in 35 values on 7 padded steps (mask 0); treated as padding and zeroed"]
    u = data.split("test").u
    assert data.support == "binary" and not u[mask == 0].any()
    np.testing.assert_array_equal(u[mask == 1], clean[mask == 1])
    assert data.split("test").steps == 11


def test_nan_on_a_real_step_is_an_error_naming_key_row_and_step(tmp_path):
    seq = rolls()
    mask = np.ones((3, 6), np.float32)
    mask[1, 3:] = 0
    seq["test"][1, 3, 0] = np.nan  # x_test row 1, step 2: real
    with pytest.raises(UserError, match=r"real.npz: x_test contains NaN or Inf values on a real step \(row 1, step 2,"):
        NpzDataset(write_npz(tmp_path / "real.npz", seq, {"test": mask}))
    seq = rolls()
    seq["train"][2, 5, 1] = np.inf  # u_train row 2, step 5 (train has no mask: every step is real)
    with pytest.raises(UserError, match=r"nomask.npz: u_train contains NaN or Inf values on a real step \(row 2, step 5.*no mask"):
        NpzDataset(write_npz(tmp_path / "nomask.npz", seq))


def test_cli_refuses_a_chosen_gaussian_on_binary_npz_and_trains_a_bernoulli(tmp_path, capsys):
    path = write_npz(tmp_path / "rolls.npz", rolls())
    sets = [a for s in [*TINY, "model.aux.reconstruction.hidden=6"] for a in ("--set", s)]
    args = ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(path), "--max-steps", "2", *sets]
    gaussian = ["--set", "model.likelihood.component=gaussian"]
    assert main([*args, *gaussian, "--out", str(tmp_path / "a")]) == 2
    assert "holds binary values; use --set model.likelihood.component=bernoulli" in capsys.readouterr().err
    bernoulli = ["--set", "model.likelihood.component=bernoulli", "--data-option", "unit=nats per step"]
    assert main([*args, *bernoulli, "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    assert main([*args, "--data-option", "unit=bits", "--out", str(tmp_path / "c")]) == 2
    assert "--data-option: npz: unit='bits' is not a unit; expected one of" in capsys.readouterr().err


def test_fingerprint_hashes_content_not_storage(tmp_path):
    seq = rolls()
    a = NpzDataset(write_npz(tmp_path / "a.npz", seq))
    b = NpzDataset(write_npz(tmp_path / "b.npz", {s: v.astype(np.float64) for s, v in seq.items()}))
    assert len(a.fingerprint) == 12 and int(a.fingerprint, 16) >= 0
    assert a.fingerprint == b.fingerprint  # float64 and float32 files of the same 0/1 values
    seq["valid"][0, 1, 0] = 1 - seq["valid"][0, 1, 0]
    assert NpzDataset(write_npz(tmp_path / "c.npz", seq)).fingerprint != a.fingerprint
    masks = {"test": np.ones((3, 6)), "train": np.ones((4, 6))}
    masks["train"][0, 5] = 0
    assert NpzDataset(write_npz(tmp_path / "d.npz", rolls(), masks)).fingerprint != a.fingerprint
