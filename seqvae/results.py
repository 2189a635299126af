"""Result tables: results.json (a list of rows), results.csv and results.md, written atomically.

Result files are strict JSON (no ``NaN`` or ``Infinity``, which most JSON readers refuse): a
non-finite number in a row is an error of that row, which names it, and the value is null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from seqvae.checkpoint import atomic_write_text

FIELDS = (
    "model", "dataset", "seed", "split", "elbo", "iwae", "iwae_k", "unit", "kl", "recon", "aux",
    "active_units", "kl_static", "kl_per_step", "active_units_static", "steps", "train_seconds",
    "eval_seconds", "params", "test_sequences", "test_steps", "data", "paper", "error",
)  # fmt: skip
"""One row per model, data set and seed."""

SUMMARISED = ("elbo", "iwae", "kl", "recon", "active_units")


def checked(row: dict[str, Any], what: str = "evaluation") -> dict[str, Any]:
    """``row`` with every non-finite number replaced by None and named in its ``error``
    (``non-finite evaluation: elbo is nan, kl is inf``), after any error it already has."""
    bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
    if not bad:
        return row
    problem = f"non-finite {what}: " + ", ".join(f"{k} is {v}" for k, v in bad.items())
    error = row.get("error")
    return {**row, **dict.fromkeys(bad), "error": f"{error}; {problem}" if error else problem}


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON: a non-finite float anywhere becomes null (rows go through :func:`checked`
    first, so that their error says which value it was)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [checked(row) for row in rows]  # rows kept from an earlier run included
    atomic_write_text(out / "results.json", dumps(rows, indent=1) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in FIELDS} for row in rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_text(out / "results.md", markdown(rows))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per-seed rows, then the mean and standard deviation over seeds per model."""
    columns = ("model", "dataset", "seed", "elbo", "iwae", "iwae_k", "unit", "kl", "recon", "aux",
               "active_units", "steps", "train_seconds", "params", "test_steps", "data", "paper",
               "error")  # fmt: skip
    if any(row.get("kl_static") is not None for row in rows):  # a model with a sequence-level latent
        at = columns.index("active_units") + 1
        columns = (*columns[:at], "kl_static", "kl_per_step", "active_units_static", *columns[at:])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_fmt(row.get(c)).replace("|", "/").replace("\n", " ") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Summary over seeds (mean ± standard deviation, runs without error):", ""]
    lines += ["| model | dataset | data | seeds | " + " | ".join(SUMMARISED) + " | unit | paper |",
              "|" + "---|" * (len(SUMMARISED) + 6)]  # fmt: skip
    # rows on different data (another file read by the same data set) are never averaged together
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["dataset"], row.get("data") or ""), []).append(row)
    for (model, dataset, data), group in groups.items():
        ok = [r for r in group if r.get("error") is None]
        cells = []
        for key in SUMMARISED:
            values = [float(r[key]) for r in ok if r.get(key) is not None]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(_fmt(values[0]))
            else:
                cells.append(f"{_fmt(statistics.mean(values))} ± {_fmt(statistics.stdev(values))}")
        unit = group[0].get("unit") or ""
        lines.append(f"| {model} | {dataset} | {data} | {len(ok)}/{len(group)} | " + " | ".join(cells)
                     + f" | {unit} | {_fmt(group[0].get('paper'))} |")  # fmt: skip
    lines += ["", "Units: speech ELBO/IWAE in nats per sequence (higher is better); music in nats "
              "per step and MNIST in nats per image as negative log-likelihood bounds (lower is "
              "better); text as perplexity bounds. kl, recon and aux are in nats per sequence "
              "(per image) or per step (music, text); kl_static (a sequence-level latent's) per "
              "sequence and kl_per_step per step, whatever the unit. paper: the published number for the model "
              "on that data set, in the same unit, only where the data is the data it was measured on. "
              "test_steps: the predicted test steps; data: a fingerprint of the data's content.", ""]  # fmt: skip
    return "\n".join(lines)
