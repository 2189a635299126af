"""Training speed on an idle and on a loaded machine, before and after seqvae's thread settings.

    python benchmarks/threads.py                      # zforcing, small sizes, 5 repeats
    python benchmarks/threads.py --dims timit --steps 4 --repeats 3 --json

Each measurement is a fresh process that times ``--steps`` training updates (forward, backward,
clip, Adam) of ``--model`` at ``--dims`` sizes after 3 warm-up updates, and prints the median
seconds per update. Configurations:

- ``before``: what seqvae did before it set threads (and what plain PyTorch does): one
  intra-op thread per core, OpenMP's default spinning wait;
- ``after``: seqvae's defaults (:mod:`seqvae.threads`): ``OMP_WAIT_POLICY=PASSIVE`` set before
  torch loads, threads = this process's share of the cores;
- ``one-thread``: one thread, seqvae's wait policy;
- ``after:KEY=VALUE,...``: seqvae's defaults with that environment (e.g.
  ``after:GOMP_SPINCOUNT=10000``), to explore.

Conditions: ``idle``; ``busy`` (a competing process spinning one core in pure Python); and
``trainer`` (a competing training job of the same model with ``before``'s settings, the job a
second user starts). The configurations alternate within a condition (before, after, ...,
before, after, ...) so slow drift on a shared machine hits them alike. Printed: the median
s/update of every configuration and condition, and its slowdown against the same configuration
on the idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("idle", "busy", "trainer")
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE")


def child(config: str, model: str, dims: str, steps: int) -> None:
    """One measurement, in this process; prints {"seconds": median s/update, "threads": n}."""
    name, _, extra = config.partition(":")
    for item in filter(None, extra.split(",")):
        key, _, value = item.partition("=")
        os.environ[key] = value
    if name != "before":  # seqvae's own order: the wait policy first, then torch
        from seqvae.threads import quiet_openmp, set_threads

        quiet_openmp()
    import torch

    if name == "after":
        set_threads()
    elif name == "one-thread":
        set_threads(1)
    sys.path.insert(0, str(ROOT))
    from benchmarks.train_step import build_engine, engine_step_fn, make_batch

    net, comp = build_engine(model, dims)
    step = engine_step_fn(net, comp, make_batch(40, 32))
    for _ in range(3):
        step()
    times = []
    for _ in range(steps if steps > 0 else 10**9):  # a competing trainer runs until killed
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    print(json.dumps({"seconds": statistics.median(times), "threads": torch.get_num_threads()}))


def clean_env() -> dict[str, str]:
    """This environment without thread settings: each configuration sets its own."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_ENV}


def measure(config: str, args) -> float:
    command = [sys.executable, __file__, "--child", config, "--model", args.model, "--dims", args.dims,
               "--steps", str(args.steps)]  # fmt: skip
    out = subprocess.run(command, env=clean_env(), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def start_competitor(condition: str, args) -> subprocess.Popen | None:
    if condition == "idle":
        return None
    if condition == "busy":
        command = [sys.executable, "-c", "while True: pass"]
    else:
        command = [sys.executable, __file__, "--child", "before", "--model", args.model, "--dims", args.dims,
                   "--steps", "0"]  # fmt: skip
    process = subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, start_new_session=True)
    time.sleep(args.settle)  # the competitor is at full speed before the first measurement
    return process


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zforcing")
    parser.add_argument("--dims", default="small", choices=("small", "timit"))
    parser.add_argument("--steps", type=int, default=15, help="timed updates per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per configuration and condition")
    parser.add_argument("--configs", default="before,after,one-thread")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--settle", type=float, default=3.0, help="seconds a competitor runs before measuring")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.dims, args.steps)
        return 0
    configs = [c for c in args.configs.split(",") if c]
    conditions = [c for c in args.conditions.split(",") if c]
    from seqvae.threads import available_cores

    print(f"{args.model} at {args.dims} sizes, {args.steps} updates per measurement, {args.repeats} repeats, "
          f"{available_cores()} cores", flush=True)  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {c: {} for c in conditions}
    for condition in conditions:
        competitor = start_competitor(condition, args)
        try:
            for _ in range(args.repeats):
                for config in configs:
                    results[condition].setdefault(config, []).append(measure(config, args))
        finally:
            stop(competitor)
        medians = {c: statistics.median(v) for c, v in results[condition].items()}
        print(f"  {condition}: " + ", ".join(f"{c} {m:.3f}" for c, m in medians.items()), flush=True)
    table = report(results, configs, conditions)
    print(table)
    if args.json:
        print(json.dumps({"model": args.model, "dims": args.dims, "steps": args.steps, "results": results}))
    return 0


def report(results, configs, conditions) -> str:
    """Markdown: median s/update, and the slowdown against the idle machine."""
    header = "| configuration | " + " | ".join(f"{c} s/update" for c in conditions) + " |"
    lines = [header, "|" + "---|" * (len(conditions) + 1)]
    for config in configs:
        idle = statistics.median(results["idle"][config]) if "idle" in results else None
        cells = []
        for condition in conditions:
            median = statistics.median(results[condition][config])
            ratio = f" ({median / idle:.1f}x)" if idle and condition != "idle" else ""
            cells.append(f"{median:.3f}{ratio}")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
