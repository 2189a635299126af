"""A non-finite evaluation is an error in its row, and result files are strict JSON."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import seqvae.bench
import seqvae.evaluate
from seqvae.cli import main
from seqvae.results import checked, dumps, write_results
from tests.conftest import TINY

SETS = [item for s in TINY for item in ("--set", s)]


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse and jq do."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a result file"))


def poisoned(real):
    """``evaluate`` with one weight of the model set to NaN first: a model gone bad."""

    def evaluate(model, *args, **kwargs):
        with torch.no_grad():
            for parameter in model.decoder.parameters():
                parameter.view(-1)[0] = float("nan")
        return real(model, *args, **kwargs)

    return evaluate


def test_checked_names_every_non_finite_value_and_keeps_an_earlier_error():
    row = {"model": "m", "elbo": float("nan"), "iwae": float("-inf"), "kl": 1.5, "steps": 3, "error": None}
    out = checked(row)
    assert out["elbo"] is None and out["iwae"] is None and out["kl"] == 1.5 and out["steps"] == 3
    assert out["error"] == "non-finite evaluation: elbo is nan, iwae is -inf"
    assert checked({"kl": float("inf"), "error": "Boom"})["error"] == "Boom; non-finite evaluation: kl is inf"
    assert checked({"kl": 2.0, "error": None}) == {"kl": 2.0, "error": None}
    assert dumps({"a": [float("nan"), 1.0], "b": {"c": float("inf")}}) == '{"a": [null, 1.0], "b": {"c": null}}'


def test_write_results_never_writes_nan(tmp_path):
    # a row as an earlier seqvae kept it in a run's result.json, NaN and all
    rows = [{"model": "m", "dataset": "npz", "seed": 0, "elbo": float("nan"), "kl": 1.0, "error": None}]
    write_results(tmp_path, rows)
    (row,) = strict_json((tmp_path / "results.json").read_text())
    assert row["elbo"] is None and row["error"] == "non-finite evaluation: elbo is nan"
    (line,) = csv.DictReader((tmp_path / "results.csv").open())
    assert line["elbo"] == "" and "elbo is nan" in line["error"]
    assert "nan" not in (tmp_path / "results.md").read_text().split("Summary")[0].replace("elbo is nan", "")


def test_a_bench_run_whose_test_evaluation_is_nan_is_an_error_row(toy_npz, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(seqvae.bench, "evaluate", poisoned(seqvae.bench.evaluate))
    out = tmp_path / "bench"
    status = main(["bench", "--models", "zforcing-noaux", "--dataset", "npz", "--data", str(toy_npz),
                   "--max-steps", "3", "--iwae-k", "2", "--out", str(out), *SETS])  # fmt: skip
    assert status == 1  # a failed row, as for any other failure of a run
    (row,) = strict_json((out / "results.json").read_text())
    assert row["elbo"] is None and row["iwae"] is None and row["steps"] == 3
    assert row["error"].startswith("non-finite test evaluation: elbo is nan")
    (run,) = (out / "runs").iterdir()
    kept = strict_json((run / "result.json").read_text())
    assert kept["row"] == row
    assert "non-finite test evaluation" in capsys.readouterr().err


def test_eval_json_is_strict_and_says_which_bound_was_not_finite(toy_npz, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "zforcing-noaux", "--dataset", "npz", "--data", str(toy_npz),
                 "--out", str(run), "--max-steps", "2", *SETS]) == 0  # fmt: skip
    checkpoint = next((run / "checkpoints").glob("*.pt"))
    capsys.readouterr()
    args = ["eval", str(checkpoint), "--dataset", "npz", "--data", str(toy_npz), "--iwae-k", "2", "--json"]
    assert main(args) == 0
    good = strict_json(capsys.readouterr().out)
    assert good["error"] is None and isinstance(good["elbo"], float)
    monkeypatch.setattr(seqvae.evaluate, "evaluate", poisoned(seqvae.evaluate.evaluate))
    assert main(args) == 1
    captured = capsys.readouterr()
    bad = strict_json(captured.out)
    assert bad["elbo"] is None and bad["iwae"] is None and bad["sequences"] == good["sequences"]
    assert bad["error"].startswith("non-finite evaluation: elbo is nan")
    assert f"seqvae: {checkpoint}: non-finite evaluation: elbo is nan" in captured.err
