"""The command line as users script it: outputs, files and exit statuses."""

import json

import numpy as np
import pytest
import torch
import yaml

from seqvae.cli import main
from tests.conftest import TINY


def _train_args(npz, out, *extra):
    sets = [item for s in [*TINY, "model.aux.reconstruction.hidden=6"] for item in ("--set", s)]
    return ["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz), "--out", str(out),
            "--max-steps", "12", *sets, *extra]  # fmt: skip


def test_models_lists_the_builtin_compositions(capsys):
    assert main(["models"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"zforcing", "zforcing-noaux"} <= set(names)


def test_components_lists_every_slot_with_its_provider(capsys):
    assert main(["components"]) == 0
    out = capsys.readouterr().out
    for line in ("decoder:", "encoder:", "prior:", "likelihood:", "aux:", "dataset:"):
        assert line in out
    assert any(l.split()[:2] == ["latent-lstm", "seqvae:latent-lstm"] for l in out.splitlines())


def test_train_writes_the_resolved_config_and_a_weights_only_checkpoint(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(toy_npz, out, "--set", "model.decoder.cond_ln=true", "--seed", "3")) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["decoder"] == {"component": "latent-lstm", "embed": 8, "hidden": 12, "cond_ln": True,
                                          "cond_mlp": 512, "emission_hidden": 0}
    assert config["objective"]["kl_weight"] == {"start": 0.2, "end": 1.0, "step": 5e-5, "per": "update"}
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 12 and checkpoint["seed"] == 3 and checkpoint["x_dim"] == 3
    assert checkpoint["composition"] == config
    assert "decoder.latent_film.0.weight" in checkpoint["model"] and checkpoint["optimizer"]["state"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 12] and all(np.isfinite(r["loss"]) for r in log)
    assert "trained zforcing for 12 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "model.prior.hidden=abc"], "model.prior.hidden: expected int, got 'abc'"),
        (["--dataset", "nzp"], "unknown dataset 'nzp'; did you mean 'npz'?"),
        (["--max-steps", "0"], "--max-steps: expected a positive number"),
        (["--device", "tpu"], "--device: expected cpu or cuda"),
        (["--data-option", "vocab=3"], "--data-option: npz.vocab: unknown option (options: support, unit)"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_traceback(toy_npz, tmp_path, capsys, extra, message):
    assert main(_train_args(toy_npz, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_debug_shows_the_traceback(toy_npz, tmp_path, capsys):
    assert main([*_train_args(toy_npz, tmp_path / "run", "--set", "model.prior.hidden=abc"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bad_data_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 3, 4)))
    assert main(_train_args(bad, tmp_path / "run")) == 2
    assert f"{bad}: missing keys mask_test, u_test, u_train" in capsys.readouterr().err
    nan = tmp_path / "nan.npz"
    arrays = {f"{k}_{s}": np.zeros((2, 3, 4)) for k in "ux" for s in ("train", "valid", "test")}
    arrays["x_train"][0, 1, 2] = np.nan
    np.savez(nan, mask_test=np.ones((2, 3)), **arrays)
    assert main(_train_args(nan, tmp_path / "run")) == 2
    assert f"{nan}: x_train contains NaN or Inf values" in capsys.readouterr().err


def test_missing_data_lists_the_places_searched(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQVAE_DATA", str(tmp_path / "corpora"))
    args = [a for a in _train_args("x", tmp_path / "run") if a not in ("--data", "x")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "corpora" / "npz") in err and "data/npz" in err


def test_internal_failures_exit_1(toy_npz, tmp_path, monkeypatch, capsys):
    import seqvae.train

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(seqvae.train, "train", broken)
    assert main(_train_args(toy_npz, tmp_path / "run")) == 1
    assert "internal error: RuntimeError: disk on fire" in capsys.readouterr().err


def test_a_diverging_run_stops_with_status_2_after_its_skipped_updates(toy_npz, tmp_path, capsys):
    args = _train_args(toy_npz, tmp_path / "run", "--set", "train.lr=1e30", "--set", "train.clip=0")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training stopped at update" in err and "10 updates in a row had a non-finite loss" in err


def test_an_existing_run_of_another_composition_is_never_overwritten(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(toy_npz, out)) == 0
    before = (out / "checkpoints" / "last.pt").read_bytes(), (out / "config.yaml").read_text()
    assert main(_train_args(toy_npz, out, "--set", "train.lr=0.5")) == 2
    assert "holds a run of a different composition" in capsys.readouterr().err
    assert ((out / "checkpoints" / "last.pt").read_bytes(), (out / "config.yaml").read_text()) == before


def test_training_again_on_the_same_folder_resumes_from_the_last_checkpoint(toy_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(toy_npz, out)) == 0
    args = [a if a != "12" else "20" for a in _train_args(toy_npz, out)]
    assert main(args) == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 20
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [10, 12, 20]
