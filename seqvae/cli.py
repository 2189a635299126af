"""The ``seqvae`` command line.

Exit status: 0 success, 2 a user error (config, data, arguments), 1 an internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from seqvae.errors import UserError

DATA_ENV = "SEQVAE_DATA"


def main(argv: list[str] | None = None) -> int:
    from seqvae.threads import quiet_openmp

    quiet_openmp()  # before anything imports torch: OpenMP reads it once, as torch loads it
    from seqvae.cli_support import UsageError, plugin_options

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"seqvae: error: {error}", file=sys.stderr)
        return 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        from seqvae.threads import set_threads

        set_threads(args.threads)
        with plugin_options(args):
            return int(args.run(args) or 0)
    except UserError as error:
        if args.debug:
            traceback.print_exc()
        print(f"seqvae: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqvae: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # anything else is our bug, or the machine's
        if args.debug:
            traceback.print_exc()
        print(f"seqvae: internal error: {type(error).__name__}: {error} (rerun with --debug)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from seqvae.cli_config import add_components_arguments
    from seqvae.cli_support import Parser, cmd_plugins, global_options

    common = Parser(add_help=False)
    global_options(common, top=False)
    parser = Parser(prog="seqvae", description=__doc__)
    global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("models", parents=[common], help="list the built-in compositions")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("components", parents=[common], help="list registered components by slot, or one's options")
    add_components_arguments(p)

    p = sub.add_parser("plugins", parents=[common], help="list the plugins: what each registers, and those that failed")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(run=cmd_plugins)

    from seqvae.cli_config import add_config_parsers

    add_config_parsers(sub, common)  # seqvae config show / validate

    p = sub.add_parser("train", parents=[common], help="train one composition")
    p.add_argument("--model", required=True, help="built-in composition name or a YAML file")
    p.add_argument("--dataset", required=True, help="registered data set, e.g. npz")
    p.add_argument("--data", help=f"data file or folder (default: ${DATA_ENV}/<dataset>, then ./data/<dataset>)")
    p.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="KEY=VALUE",
                   help="a data-set option, e.g. vocabulary=16000 (repeatable; see seqvae components)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a composition value, e.g. model.decoder.hidden=256 (repeatable)")
    p.add_argument("--preset", help="hyper-parameter preset from registry.yaml (default: the data set's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, help="optimiser updates (default 1000)")
    budget.add_argument("--epochs", type=float, help="passes over the training split")
    budget.add_argument("--time-budget", type=float, metavar="MINUTES", help="training minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<model>-<dataset>-seed<S>)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("sample", parents=[common], help="generate sequences from a model's prior")
    p.add_argument("checkpoint", help="a checkpoint of `seqvae train` (OUT/checkpoints/last.pt)")
    p.add_argument("--n", type=int, default=8, help="number of sequences (default 8)")
    p.add_argument("--steps", type=int, default=100, help="steps per sequence (default 100)")
    p.add_argument("--out", required=True, help="output .npz; key x holds (n, steps, D)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("bench", parents=[common], help="train, evaluate and compare models")
    p.add_argument("--models", required=True, help="comma-separated compositions (names or YAML files)")
    p.add_argument("--dataset", required=True, help="registered data set")
    p.add_argument("--data", help="data file or folder (default: $SEQVAE_DATA/<dataset>, then ./data/<dataset>)")
    p.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="KEY=VALUE",
                   help="a data-set option, e.g. vocabulary=16000 (repeatable; see seqvae components)")
    p.add_argument("--preset", help="hyper-parameter preset from registry.yaml (default: the data set's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, help="optimiser updates per run")
    budget.add_argument("--epochs", type=float, help="passes over the training split per run")
    budget.add_argument("--time-budget", type=float, metavar="MINUTES", help="training minutes per run")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--iwae-k", type=int, default=64, help="importance samples for the test IWAE bound")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every composition (after the preset)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="output folder (default runs/bench-<dataset>)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs in N processes at a time, each on its share of the cores (default 1)")
    p.add_argument("--worker", metavar="I/N", help=argparse.SUPPRESS)  # one run of a --jobs bench
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("eval", parents=[common], help="evaluate one checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data")
    p.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="KEY=VALUE",
                   help="a data-set option, e.g. vocabulary=16000 (repeatable; see seqvae components)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--iwae-k", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_eval)
    return parser


def cmd_models(args) -> int:
    from seqvae.composition import builtin_compositions

    compositions = builtin_compositions()
    width = max(map(len, compositions), default=0)
    for name, raw in compositions.items():
        description = " ".join(str(raw.get("description", "")).split())
        print(f"{name:<{width}}  {description}")
    return 0


def resolve_data_path(
    dataset: str, data: str | None, expected: str = "", source: str = "", embedded: bool = False
) -> Path | None:
    """--data wins, then $SEQVAE_DATA/<dataset>, then ./data/<dataset>.

    For an ``embedded`` data set found in none of them, None (it reads its bundled data);
    otherwise a :class:`UserError` listing the places searched, the ``expected`` files and
    where such a corpus comes from (``source``).
    """
    wanted = f"{dataset} expects {expected}" if expected else ""
    if data:
        path = Path(data).expanduser()
        if not path.exists():
            hint = f" ({wanted})" if wanted else ""
            raise UserError(f"--data {data}: no such file or folder{hint}")
        return path
    places = []
    if os.environ.get(DATA_ENV):
        places.append(Path(os.environ[DATA_ENV]).expanduser() / dataset)
    places.append(Path("data") / dataset)
    for place in places:
        if place.exists():
            return place
    if embedded:
        return None
    unset = "" if os.environ.get(DATA_ENV) else f" (${DATA_ENV} is not set)"
    lines = [
        f"no data for {dataset!r}: pass --data PATH, or put it in one of the places searched:",
        *(f"  {place.absolute()}" for place in places),
        f"  (--data was not given{unset})",
    ]
    if wanted:
        lines.append(f"{wanted}.")
    if source:
        lines.append(f"Where to get it: {source}.")
    raise UserError("\n".join(lines))


def open_dataset(name: str, data: str | None, comp=None, options: list[str] | None = None):
    """The registered data set ``name``, read from its data path (see resolve_data_path),
    with ``options`` (``KEY=VALUE`` strings) checked against the data set's Options.

    With a composition ``comp`` (a checkpoint's), also checks that its likelihood fits the data
    (binary data with a Gaussian, word ids without the right number of classes); where the class
    knows its support, before any work is done.
    """
    from seqvae.registry import default_registry
    from seqvae.resolve import check_fit

    registry = default_registry()
    entry = registry.get("dataset", name, path="--dataset")
    cls = entry.cls
    path = resolve_data_path(name, data, cls.expected_files, cls.source_hint, cls.embedded)
    if comp is not None:  # before a corpus is prepared, which may take a while
        spec = comp.slots["likelihood"]
        cls.check_support(registry.get("likelihood", spec.component).cls, where=spec.path)
    dataset = cls(path, _dataset_options(cls, options or []))
    if comp is not None:
        check_fit(comp, dataset, registry)
    return dataset


def precheck_likelihood(dataset: str, overrides: list[str]) -> None:
    """Refuse a likelihood the user set with --set that cannot fit the data set, before its
    corpus is prepared (which may take minutes); where the class knows its support."""
    from seqvae.registry import default_registry

    registry = default_registry()
    chosen = [item.partition("=")[2] for item in overrides if item.startswith("model.likelihood.component=")]
    entry = registry.find("dataset", dataset)
    likelihood = registry.find("likelihood", chosen[-1].strip()) if chosen else None
    if entry is not None and likelihood is not None:
        entry.cls.check_support(likelihood.cls, where="model.likelihood")


def _dataset_options(cls, items: list[str]):
    from seqvae.options import parse
    from seqvae.yamlio import loads

    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--data-option {item!r}: expected KEY=VALUE, e.g. vocabulary=16000")
        values[key] = loads(text, source=f"--data-option {key}")
    return parse(cls.Options, values, cls.name, source="--data-option")


def cmd_train(args) -> int:
    from seqvae.distributed import world
    from seqvae.resolve import resolve_composition
    from seqvae.train import Budget, train

    budget = Budget(args.max_steps, args.epochs, args.time_budget)
    if args.max_steps is None and args.epochs is None and args.time_budget is None:
        budget = Budget(max_steps=1000)
    budget.validate()
    device = _device(args.device)
    precheck_likelihood(args.dataset, args.overrides)
    dataset = open_dataset(args.dataset, args.data, options=args.data_options)
    comp = resolve_composition(args.model, dataset, args.dataset, args.preset, args.overrides)
    out = Path(args.out or f"runs/{comp.name}-{args.dataset}-seed{args.seed}")
    result = train(comp, dataset, out, seed=args.seed, device=device, budget=budget)
    if not world().main:  # under torchrun, rank 0 reports for all
        return 0
    valid = result.valid.get("elbo_in_unit")
    valid_text = f", valid ELBO {valid:.4g} {dataset.unit}" if valid is not None else ""
    print(f"trained {comp.name} for {result.step} steps in {result.seconds:.1f}s: "
          f"last loss {result.last_loss:.4g}{valid_text}")
    print(f"wrote {out / 'config.yaml'} and {result.checkpoint}")
    return 0


def cmd_sample(args) -> int:
    import io

    import numpy as np
    import torch

    from seqvae.checkpoint import atomic_write_bytes, load_checkpoint, model_from_checkpoint

    for flag, value in (("--n", args.n), ("--steps", args.steps)):
        if value < 1:
            raise UserError(f"{flag}: expected a positive number, got {value}")
    device = _device(args.device)
    path = Path(args.checkpoint)
    checkpoint = load_checkpoint(path, map_location="cpu")
    if not isinstance(checkpoint, dict):
        kind = type(checkpoint).__name__
        raise UserError(f"{path}: not a seqvae checkpoint (it holds a {kind}, not a dict)")
    try:
        model, comp = model_from_checkpoint(checkpoint, source=str(path))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # a foreign or mismatched dict
        problem = f"{type(error).__name__}: {error}"
        raise UserError(f"{path}: not a usable seqvae checkpoint ({problem})") from error
    model.to(device).eval()
    torch.manual_seed(args.seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(args.seed)
    x = model.sample(args.n, args.steps, device=device)  # (steps, n, D): time-major
    array = x.transpose(0, 1).float().cpu().numpy()
    if not np.isfinite(array).all():
        raise FloatingPointError(f"{path}: the model generated non-finite values")
    buffer = io.BytesIO()
    np.savez(buffer, x=array)
    out = Path(args.out)
    atomic_write_bytes(out, lambda handle: handle.write(buffer.getvalue()))
    print(f"wrote {out}: x {tuple(array.shape)} from {comp.name} ({path}, seed {args.seed})")
    return 0


def _csv(text: str, flag: str, cast=str) -> list:
    try:
        items = [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected a comma-separated list, got {text!r}") from None
    if not items:
        raise UserError(f"{flag}: expected at least one value")
    return items


def cmd_bench(args) -> int:
    from seqvae.bench import BenchPlan, run_bench
    from seqvae.bench_jobs import parse_worker, run_parallel, run_worker, worker_argv
    from seqvae.distributed import world
    from seqvae.results import markdown
    from seqvae.train import Budget

    if args.iwae_k < 1:
        raise UserError(f"--iwae-k: expected a positive number, got {args.iwae_k}")
    if args.jobs < 1:
        raise UserError(f"--jobs: expected a positive number, got {args.jobs}")
    if world().parallel:  # N ranks would each train every run and write the same files
        raise UserError("seqvae bench under torchrun: bench runs its runs in processes of its own; start it "
                        "without torchrun (--jobs N for N at a time), or torchrun `seqvae train` for one run")
    minutes = args.time_budget
    budget = Budget(args.max_steps, args.epochs, minutes)
    if args.max_steps is None and args.epochs is None and minutes is None:
        budget = Budget(epochs=1.0)
    budget.validate()
    precheck_likelihood(args.dataset, args.overrides)
    dataset = open_dataset(args.dataset, args.data, options=args.data_options)
    out = Path(args.out or f"runs/bench-{args.dataset}")
    plan = BenchPlan(
        models=_csv(args.models, "--models"), dataset_name=args.dataset, dataset=dataset, out=out,
        seeds=_csv(args.seeds, "--seeds", int), budget=budget, preset=args.preset,
        iwae_k=args.iwae_k, device=_device(args.device), overrides=tuple(args.overrides),
    )  # fmt: skip
    if args.worker:
        run_worker(plan, *parse_worker(args.worker))
        return 0
    if args.jobs > 1:
        rows = run_parallel(plan, args.jobs, lambda model, seed, number, total, threads: worker_argv(
            args, out, model, seed, number, total, args.threads or threads))  # fmt: skip
    else:
        rows = run_bench(plan)
    print(markdown(rows))
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'results.md'}")
    print(f"tensorboard --logdir {out / 'tensorboard'}")
    failed = [r for r in rows if r["error"]]
    for row in failed:
        print(f"{row['model']} seed {row['seed']}: {row['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_eval(args) -> int:
    import time

    from seqvae.checkpoint import load_checkpoint, model_from_checkpoint
    from seqvae.evaluate import evaluate
    from seqvae.results import checked, dumps

    if args.iwae_k < 0:
        raise UserError(f"--iwae-k: expected a non-negative number, got {args.iwae_k}")
    device = _device(args.device)
    path = Path(args.checkpoint)
    model, comp = model_from_checkpoint(load_checkpoint(path), source=str(path))
    dataset = open_dataset(args.dataset, args.data, comp, args.data_options)
    dataset.check_model(x_dim=model.x_dim)
    started = time.perf_counter()
    ev = evaluate(model.to(device), comp, dataset.split(args.split), device=device, iwae_k=args.iwae_k)
    result = checked({
        "checkpoint": str(path), "dataset": args.dataset, "split": args.split,
        **ev.report(dataset.unit),
        "sequences": int(ev.sequences), "steps": int(ev.steps),
        "eval_seconds": round(time.perf_counter() - started, 2), "error": None,
    })  # fmt: skip
    if args.json:
        print(dumps(result))  # strict JSON: a NaN bound is null, and the error says so
    else:
        for key, value in result.items():
            print(f"{key:>13}: {value}")
    if result["error"]:
        print(f"seqvae: {path}: {result['error']}", file=sys.stderr)
        return 1
    return 0


def _device(name: str) -> str:
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device: expected cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available to this PyTorch build")
    return name


if __name__ == "__main__":
    sys.exit(main())
