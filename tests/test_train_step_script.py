"""benchmarks/train_step.py runs end to end and its last line is the JSON the issue specifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


@pytest.mark.slow
def test_vs_plain_json_has_times_flops_matmul_rate_ratios_and_memory():
    cmd = [sys.executable, str(SCRIPT), "--model", "zforcing", "--dims", "small", "--batch", "2", "--seq-len", "3",
           "--steps", "2", "--warmup", "0", "--threads", "1", "--vs-plain", "--json", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert 0 < result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["gflop"] > 0 and result["gflops"] > 0 and result["matmul_gflops"] > 0
    assert result["device"] == "cpu" and result["threads"] == 1
    assert result["pairs"] == 2 and len(result["ratios"]) == 2
    assert result["ratio_median"] == pytest.approx(sum(result["ratios"]) / 2)
    # same model and data, written two ways: the counted products agree to within the extras
    # the plain model computes (its per-step concatenations, prior inside the loop)
    assert 0.5 < result["gflop"] / result["plain"]["gflop"] < 1.5
    for side in (result, result["plain"]):
        assert side["peak_rss_mb"] > side["training_mb"] > 0
    assert any(line.startswith("  median ratio over 2 pairs:") for line in lines)
