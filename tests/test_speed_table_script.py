"""benchmarks/speed_table.py: one row per (composition, dims), kept across reruns."""

from __future__ import annotations

import json

from benchmarks import speed_table


def test_rows_are_written_as_they_finish_and_a_rerun_measures_only_what_is_missing(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(model, dims, args):
        calls.append((model, dims))
        if model == "broken":
            return {"model": model, "dims": dims, "error": ["RuntimeError: no"], "wall_s": 0.1}
        return {"model": model, "dims": dims, "wall_s": 1.0, "median_s": 0.25, "gflop": 9.7,
                "fraction_of_matmul": 0.5, "training_mb": 400.0, "ratio_median": 0.6 if model == "zforcing" else None}

    monkeypatch.setattr(speed_table, "measure", fake)
    out = tmp_path / "table.json"
    args = ["--models", "zforcing,broken", "--dims", "small,timit", "--out", str(out)]
    assert speed_table.main(args) == 0
    assert calls == [("zforcing", "small"), ("broken", "small"), ("zforcing", "timit"), ("broken", "timit")]
    text = capsys.readouterr().out
    assert "| zforcing | small | 0.250 | 9.7 | 50 % | 400 | 0.600 |" in text
    assert "| broken | timit | error: RuntimeError: no |" in text
    assert len(json.loads(out.read_text())) == 4
    calls.clear()
    assert speed_table.main(args) == 0  # the finished rows are kept, the failed ones measured again
    assert calls == [("broken", "small"), ("broken", "timit")]
