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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
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
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(prog="seqvae", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("models", parents=[common], help="list the built-in compositions")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("components", parents=[common], help="list registered components by slot")
    p.set_defaults(run=cmd_components)

    p = sub.add_parser("train", parents=[common], help="train one composition")
    p.add_argument("--model", required=True, help="built-in composition name or a YAML file")
    p.add_argument("--dataset", required=True, help="registered data set, e.g. npz")
    p.add_argument("--data", help=f"data file or folder (default: ${DATA_ENV}/<dataset>, then ./data/<dataset>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a composition value, e.g. model.decoder.hidden=256 (repeatable)")
    p.add_argument("--max-steps", type=int, default=1000, help="optimiser updates (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<model>-<dataset>-seed<S>)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(run=cmd_train)
    return parser


def cmd_models(args) -> int:
    from seqvae.composition import builtin_compositions

    compositions = builtin_compositions()
    width = max(map(len, compositions), default=0)
    for name, raw in compositions.items():
        description = " ".join(str(raw.get("description", "")).split())
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_components(args) -> int:
    from seqvae.registry import KINDS, default_registry

    registry = default_registry()
    for kind in KINDS:
        print(f"{kind}:")
        for entry in registry.entries(kind):
            doc = (entry.cls.__doc__ or "").strip().splitlines()
            print(f"  {entry.name:<24} {entry.provider:<24} {doc[0] if doc else ''}")
    for name in registry.failed:
        print(f"plugin {name!r} failed to load (see the warning above)", file=sys.stderr)
    return 0


def resolve_data_path(dataset: str, data: str | None) -> Path:
    """--data wins, then $SEQVAE_DATA/<dataset>, then ./data/<dataset>."""
    if data:
        path = Path(data).expanduser()
        if not path.exists():
            raise UserError(f"--data {data}: no such file or folder")
        return path
    places = []
    if os.environ.get(DATA_ENV):
        places.append(Path(os.environ[DATA_ENV]).expanduser() / dataset)
    places.append(Path("data") / dataset)
    for place in places:
        if place.exists():
            return place
    raise UserError(
        f"no data for {dataset!r}: pass --data PATH, or put it in one of: "
        + ", ".join(str(p) for p in places)
    )


def open_dataset(name: str, data: str | None):
    from seqvae.registry import default_registry

    entry = default_registry().get("dataset", name, path="--dataset")
    path = resolve_data_path(name, data)
    return entry.cls(path, entry.cls.Options())


def cmd_train(args) -> int:
    from seqvae.composition import load_composition
    from seqvae.train import train

    comp = load_composition(args.model, args.overrides)
    if args.max_steps < 1:
        raise UserError(f"--max-steps: expected a positive number, got {args.max_steps}")
    device = _device(args.device)
    dataset = open_dataset(args.dataset, args.data)
    out = Path(args.out or f"runs/{comp.name}-{args.dataset}-seed{args.seed}")
    result = train(comp, dataset, out, args.max_steps, seed=args.seed, device=device)
    valid = result.valid.get("elbo")
    valid_text = f", valid ELBO {valid:.2f} nats per sequence" if valid is not None else ""
    print(f"trained {comp.name} for {result.step} steps in {result.seconds:.1f}s: "
          f"last loss {result.last_loss:.4g}{valid_text}")
    print(f"wrote {out / 'config.yaml'} and {result.checkpoint}")
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
