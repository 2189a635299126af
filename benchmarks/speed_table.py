"""One table of training-step speed for every built-in composition, at small and reference sizes.

    python benchmarks/speed_table.py                       # every built-in, small and timit dims
    python benchmarks/speed_table.py --models stcn,vrnn --dims timit --steps 5

Each (composition, dims) is one ``benchmarks/train_step.py --json`` process (``--vs-plain`` for
the Z-Forcing compositions, which have a plain eager counterpart), run one after the other so
they never share the cores. Results go to ``--out`` (default
``benchmarks/speed_table.json``) as each finishes, and a rerun skips the ones already there
(``--fresh`` measures everything again), so a long table survives being stopped. The last
output is the markdown table: seconds per update (median), GFLOP per update, the share of the
machine's fp32 matmul rate measured in the same process, peak memory above the built model,
and engine / plain where there is a plain version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ("zforcing", "zforcing-noaux")
"""Compositions with a plain eager counterpart (benchmarks/plain_zforcing.py)."""


def builtin_names() -> list[str]:
    from seqvae.composition import builtin_compositions

    return list(builtin_compositions())


def measure(model: str, dims: str, args) -> dict:
    command = [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--model", model, "--dims", dims,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    if model in PLAIN:
        command.append("--vs-plain")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        return {"model": model, "dims": dims, "error": done.stderr.strip().splitlines()[-1:], "wall_s": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"model": model, "dims": dims, "wall_s": seconds, **result}


def table(rows: list[dict]) -> str:
    lines = ["| composition | dims | s/update (median) | GFLOP/update | % of matmul rate | training MB | "
             "engine / plain |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['dims']} | error: {' '.join(r['error'])} | | | | |")
            continue
        ratio = f"{r['ratio_median']:.3f}" if r.get("ratio_median") else ""
        share, memory = 100 * r["fraction_of_matmul"], r.get("training_mb") or 0
        lines.append(f"| {r['model']} | {r['dims']} | {r['median_s']:.3f} | {r['gflop']:.1f} | "
                     f"{share:.0f} % | {memory:.0f} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated compositions (default: every built-in)")
    parser.add_argument("--dims", default="small,timit", help="comma-separated: small, timit")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="passed to train_step.py (0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "speed_table.json"))
    parser.add_argument("--fresh", action="store_true", help="measure again what --out already holds")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else builtin_names()
    out = Path(args.out)
    rows = [] if args.fresh or not out.exists() else json.loads(out.read_text())
    done = {(r["model"], r["dims"]) for r in rows if not r.get("error")}
    rows = [r for r in rows if (r["model"], r["dims"]) in done]
    for dims in args.dims.split(","):
        for model in models:
            if (model, dims) in done:
                continue
            row = measure(model, dims, args)
            rows.append(row)
            out.write_text(json.dumps(rows, indent=1) + "\n")
            state = "error" if row.get("error") else f"{row['median_s']:.3f} s/update"
            print(f"{model} {dims}: {state} ({row['wall_s']} s)", flush=True)
    order = {(m, d): i for i, (m, d) in enumerate((m, d) for d in args.dims.split(",") for m in models)}
    rows.sort(key=lambda r: order.get((r["model"], r["dims"]), len(order)))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
