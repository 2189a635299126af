"""``seqvae components`` and ``seqvae config``: what can fill a slot, and what a composition
resolves to, without training.

``config show`` and ``config validate`` go through the one resolution of ``train`` and
``bench`` (:mod:`seqvae.resolve`); with ``--dataset`` that includes the data set's preset and
what the data requires of the likelihood, so the YAML printed is what ``train`` would run and
``train`` writes to ``OUT/config.yaml``.
"""

from __future__ import annotations

import argparse
import difflib
import sys

from seqvae.errors import UserError


def add_components_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="one component or data set: show its description and options")
    p.add_argument("--slot", help="only this slot (likelihood, decoder, encoder, prior, aux) or dataset, with options")
    p.set_defaults(run=cmd_components)


def add_config_parsers(sub, common: argparse.ArgumentParser) -> None:
    """``seqvae config show`` and ``seqvae config validate``."""
    from seqvae.cli_support import Parser

    config = sub.add_parser("config", parents=[common], help="show or validate a composition without training")
    commands = config.add_subparsers(dest="config_command", parser_class=Parser)
    config.set_defaults(run=lambda args: _usage(config))
    show = commands.add_parser("show", parents=[common], help="print the resolved composition as YAML")
    show.add_argument("model", metavar="NAME_OR_YAML", help="built-in composition name or a YAML file")
    validate = commands.add_parser("validate", parents=[common], help="check a composition file; exit 0 or 2")
    validate.add_argument("model", metavar="FILE", help="a composition YAML file (or a built-in name)")
    for p, run in ((show, cmd_config_show), (validate, cmd_config_validate)):
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a composition value, as for train (repeatable)")
        p.add_argument("--dataset", help="resolve for this data set as train does: its preset, the likelihood it needs")
        p.add_argument("--data", help="data file or folder (default: $SEQVAE_DATA/<dataset>, then ./data/<dataset>)")
        p.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="KEY=VALUE",
                       help="a data-set option (repeatable; see seqvae components DATASET)")
        p.add_argument("--preset", help="hyper-parameter preset from registry.yaml (default: the data set's)")
        p.set_defaults(run=run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --------------------------------------------------------------------------- components


def cmd_components(args) -> int:
    """Every component by slot with its plugin and description; with ``--slot`` or a NAME,
    their options too."""
    from seqvae.describe import summary
    from seqvae.registry import KINDS, default_registry

    registry = default_registry()
    if args.slot is not None and args.slot not in KINDS:
        close = difflib.get_close_matches(args.slot, KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"--slot {args.slot!r}: not a slot{hint} (expected one of {', '.join(KINDS)})")
    kinds = [args.slot] if args.slot else list(KINDS)
    if args.name is not None:
        entries = [e for kind in kinds if (e := registry.find(kind, args.name)) is not None]
        if not entries:
            names = sorted({e.name for kind in kinds for e in registry.entries(kind)})
            close = difflib.get_close_matches(args.name, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            where = f"slot {args.slot!r}" if args.slot else "any slot or data set"
            raise UserError(f"no component {args.name!r} in {where}{hint} (`seqvae components` lists them)")
        for i, entry in enumerate(entries):
            if i:
                print()
            _print_detail(entry)
    else:
        listed = [e for kind in kinds for e in registry.entries(kind)]
        # columns as wide as the longest name and provider (a third party's may be long)
        name_width = max((len(e.name) for e in listed), default=0)
        provider_width = max((len(e.provider) for e in listed), default=0)
        for kind in kinds:
            print(f"{kind}:")
            for entry in registry.entries(kind):
                print(f"  {entry.name:<{name_width}}  {entry.provider:<{provider_width}}  {summary(entry.cls)}")
                if args.slot:
                    _print_options(entry, indent="      ")
    for name, error in registry.failed.items():
        print(f"plugin {name!r} failed to load and is skipped: {error} (see seqvae plugins)", file=sys.stderr)
    return 0


def _print_detail(entry) -> None:
    import inspect

    from seqvae.describe import summary

    print(f"{entry.kind} {entry.name}  (plugin {entry.provider}; {entry.cls.__module__}.{entry.cls.__qualname__})")
    print(f"  {summary(entry.cls)}")
    rest = inspect.cleandoc(entry.cls.__dict__.get("__doc__") or "").splitlines()[1:]
    for line in (line for line in rest if line.strip()):
        print(f"  {line}")
    _print_options(entry, indent="  ")
    if entry.kind == "encoder":  # the engine's block: the same for every encoder
        from seqvae.describe import option_docs
        from seqvae.flow import FlowOptions

        print("  flow on its posterior (model.encoder.flow.KEY, for any encoder; seqvae/flow.py):")
        _print_option_docs(option_docs(FlowOptions), "  ")


def _print_options(entry, indent: str) -> None:
    from seqvae.describe import option_docs

    options = option_docs(entry.cls.Options)
    if entry.kind == "dataset":
        how = "--data-option KEY=VALUE"
    elif entry.kind == "aux":
        how = "model.aux.<name>.KEY in a composition (plus weight, a schedule)"
    else:
        how = f"model.{entry.kind}.KEY in a composition, or --set model.{entry.kind}.KEY=VALUE"
    if not options:
        print(f"{indent}options: none")
    else:
        print(f"{indent}options ({how}):")
        _print_option_docs(options, indent)


def _print_option_docs(options, indent: str) -> None:
    for option in options:
        print(f"{indent}  {option.name}: {option.type} = {option.default}")
        if option.doc:
            print(f"{indent}      {option.doc}")


# --------------------------------------------------------------------------- config


def resolved(args):
    """The composition ``args.model`` as train would resolve it: with ``--dataset``, through
    :func:`seqvae.resolve.resolve_composition` on the opened data set; without, the
    composition and the ``--set`` overrides alone (no preset: presets belong to data sets)."""
    from seqvae.composition import load_composition

    if args.dataset is None:
        for flag, value in (("--data", args.data), ("--data-option", args.data_options), ("--preset", args.preset)):
            if value:
                raise UserError(f"{flag} needs --dataset: presets and data requirements belong to a data set; "
                                "add --dataset NAME (seqvae components --slot dataset lists them)")
        return load_composition(args.model, args.overrides), None
    from seqvae.cli import open_dataset, precheck_likelihood
    from seqvae.resolve import resolve_composition

    precheck_likelihood(args.dataset, args.overrides)
    dataset = open_dataset(args.dataset, args.data, options=args.data_options)
    return resolve_composition(args.model, dataset, args.dataset, args.preset, args.overrides), dataset


def cmd_config_show(args) -> int:
    from seqvae.yamlio import dump_yaml

    comp, dataset = resolved(args)
    where = f" for data set {args.dataset!r}" if dataset is not None else ""
    print(f"# {comp.name}{where}, resolved: every default filled in; a valid --model file")
    print(dump_yaml(comp.to_dict()), end="")
    return 0


def cmd_config_validate(args) -> int:
    comp, dataset = resolved(args)
    parts = [f"{slot} {spec.component}" for slot, spec in comp.slots.items()]
    parts += [f"aux.{key} {spec.component}" for key, spec in comp.aux.items()]
    built = ""
    if dataset is not None:
        import torch

        from seqvae.composition import build_model

        # the meta device allocates nothing: a large model is checked in a moment
        with torch.device("meta"):
            model = build_model(comp, dataset.x_dim)
        params = sum(p.numel() for p in model.parameters())
        built = f"; builds for {args.dataset!r} ({dataset.x_dim} features per step, {params:,} parameters)"
    print(f"{args.model}: valid composition ({', '.join(parts)}){built}")
    return 0


__all__ = ["add_components_arguments", "add_config_parsers", "cmd_components", "cmd_config_show",
           "cmd_config_validate", "resolved"]  # fmt: skip
