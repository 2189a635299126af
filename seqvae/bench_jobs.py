"""``seqvae bench --jobs N``: the (model, seed) runs of a bench in N processes at a time.

Each run is a ``seqvae bench --worker`` process for that one model and seed, on the same
``--out``: it trains, evaluates and writes the run's folder exactly as a serial bench does
(``result.json``, TensorBoard, checkpoints), plus the row it made in ``row.json``. The parent
collects the rows in the serial order and writes the same result files a serial bench writes,
after each run that ends. Each process gets its share of the cores: the parent's CPUs are split
into N sets, a worker is pinned to its slot's set and uses that many threads (or ``--threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from seqvae.bench import BenchPlan, announcer, error_row, finished_row, outcome_text, plan_runs, run_guarded, run_name
from seqvae.checkpoint import atomic_write_text
from seqvae.results import dumps, write_results

ROW_FILE = "row.json"
POLL_SECONDS = 0.2


def cpu_sets(jobs: int) -> list[list[int]]:
    """``jobs`` sets of this process's CPUs: disjoint where there are enough, shared otherwise."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no pinning, threads still divided
        cpus = list(range(os.cpu_count() or 1))
    share = max(1, len(cpus) // jobs)
    if len(cpus) >= jobs:
        return [cpus[j * share : (j + 1) * share] for j in range(jobs)]
    return [[cpus[j % len(cpus)]] for j in range(jobs)]


def worker_argv(args: argparse.Namespace, out: Path, model: str, seed: int, number: int, total: int,
                threads: int) -> list[str]:  # fmt: skip
    """The ``seqvae`` command line of one worker: the bench's own options, one model and seed."""
    argv = ["--threads", str(threads)]
    for module in [*args.plugin_modules, *getattr(args, "more_plugin_modules", [])]:
        argv += ["--plugin", module]
    argv += ["--strict-plugins"] if args.strict_plugins else []
    argv += ["--debug"] if args.debug else []
    argv += ["bench", "--worker", f"{number}/{total}", "--models", model, "--seeds", str(seed),
             "--dataset", args.dataset, "--iwae-k", str(args.iwae_k), "--device", args.device,
             "--out", str(out)]  # fmt: skip
    for flag, value in (("--data", args.data), ("--preset", args.preset), ("--max-steps", args.max_steps),
                        ("--epochs", args.epochs), ("--time-budget", args.time_budget)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    for item in args.data_options:
        argv += ["--data-option", item]
    for item in args.overrides:
        argv += ["--set", item]
    return argv


def run_worker(plan: BenchPlan, number: int, total: int) -> dict[str, Any]:
    """One run (the plan's only model and seed) in this worker process, run ``number`` of the
    bench's ``total``; its row in ``row.json``. Lines, not bars: N processes share the output."""
    ((model, seed),) = plan_runs(plan)
    plan = dataclasses.replace(plan, lines=True, progress=False)
    row = run_guarded(plan, model, seed, announcer(plan, number, model, seed, total))
    path = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / ROW_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(row, indent=1))
    return row


def run_parallel(plan: BenchPlan, jobs: int, argv_of) -> list[dict[str, Any]]:
    """All runs of the plan in ``jobs`` worker processes at a time; ``argv_of(model, seed,
    number, total, threads)`` is a worker's command line. Returns the rows in the serial order."""
    runs = plan_runs(plan)
    slots = cpu_sets(jobs)
    pending = list(enumerate(runs))
    running: dict[int, tuple[subprocess.Popen, int]] = {}  # slot -> (process, run index)
    rows: dict[int, dict[str, Any]] = {}
    try:
        while pending or running:
            for slot in [s for s in range(jobs) if s not in running]:
                while pending and slot not in running:
                    index, (model, seed) = pending.pop(0)
                    if (row := _reusable(plan, model, seed, index, len(runs))) is not None:
                        rows[index] = row  # no process to start for a run an earlier bench finished
                        continue
                    argv = argv_of(model, seed, index + 1, len(runs), len(slots[slot]))
                    running[slot] = (_start(plan, model, seed, argv, slots[slot]), index)
            for slot, (process, index) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                rows[index] = _collect(plan, runs[index], process.returncode)
                write_results(plan.out, [rows[i] for i in sorted(rows)])
            time.sleep(POLL_SECONDS)
        write_results(plan.out, [rows[i] for i in range(len(runs))])  # also when every run was reused
    finally:
        for process, _ in running.values():  # interrupted: the workers stop with the bench
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return [rows[i] for i in range(len(runs))]


def _start(plan: BenchPlan, model: str, seed: int, argv: list[str], cpus: list[int]) -> subprocess.Popen:
    row_file = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / ROW_FILE
    row_file.unlink(missing_ok=True)  # only this worker's row counts
    process = subprocess.Popen([sys.executable, "-m", "seqvae", *argv])
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(process.pid, cpus)
        except OSError:  # it ended already, or pinning is not allowed here
            pass
    return process


def _reusable(plan: BenchPlan, model: str, seed: int, index: int, total: int) -> dict[str, Any] | None:
    try:
        row = finished_row(plan, model, seed)
    except Exception:  # noqa: BLE001 -- a composition that fails to resolve: its worker says why
        return None
    if row is not None:
        say = announcer(dataclasses.replace(plan, lines=True), index + 1, model, seed, total)
        say(f"finished by an earlier run ({plan.out / 'runs' / run_name(model, plan.dataset_name, seed)})")
        say(outcome_text(row))
    return row


def _collect(plan: BenchPlan, run: tuple[str, int], status: int) -> dict[str, Any]:
    model, seed = run
    path = plan.out / "runs" / run_name(model, plan.dataset_name, seed) / ROW_FILE
    if path.exists():
        return json.loads(path.read_text())
    why = f"its worker process exited with status {status} before it wrote a row (see its output above)"
    return error_row(plan, model, seed, RuntimeError(why))


def parse_worker(text: str) -> tuple[int, int]:
    number, _, total = text.partition("/")
    return int(number), int(total)


