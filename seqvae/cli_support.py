"""The command line's shared parts: the options every command takes (``--debug``, ``--plugin``,
``--strict-plugins``, ``--threads``), argument errors and plugin warnings on one line, and ``seqvae plugins``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from seqvae.registry import DISABLE_ENV, STRICT_ENV, Plugin, configure, default_registry, env_flag, env_list
from seqvae.registry import distribution_version as _distribution_version


class UsageError(Exception):
    """A command line argparse cannot parse; reported like a :class:`UserError` (status 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``seqvae: error:`` line that main returns as status 2,
    not the usage text and a SystemExit (``--help`` shows the usage)."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)".replace("\n", "\\n"))


def global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the command. A subcommand's copy sets a value only
    when given there: argparse would otherwise reset what was given before the command."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--debug", action="store_true", help="show tracebacks", **unset)
    parser.add_argument(
        "--plugin", dest="plugin_modules" if top else "more_plugin_modules", action="append", metavar="MODULE",
        help="also load this plugin module, importable from PYTHONPATH (repeatable; as $SEQVAE_PLUGINS)",
        **({"default": []} if top else unset),
    )  # fmt: skip
    parser.add_argument(
        "--strict-plugins", action="store_true", **unset,
        help="a plugin that fails to load is an error, not a warning (as $SEQVAE_STRICT_PLUGINS=1)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, metavar="N", **({"default": None} if top else unset),
        help="intra-op CPU threads (default: $OMP_NUM_THREADS, else this process's share of its cores)",
    )  # fmt: skip


@contextmanager
def plugin_options(args: argparse.Namespace) -> Iterator[None]:
    """The plugin options of one call of ``main``, and its plugin warnings on one line."""
    configure([*args.plugin_modules, *getattr(args, "more_plugin_modules", [])], args.strict_plugins)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = plugin_warnings_on_one_line(warnings.showwarning)
            if args.strict_plugins or env_flag(STRICT_ENV):
                default_registry()  # a broken plugin is fatal for every command, not only those that use it
            yield
    finally:
        configure()  # the options of one call do not outlive it (tests and notebooks call main again)


def plugin_warnings_on_one_line(show):
    """A plugin that failed to load as one ``seqvae: warning:`` line, instead of Python's two
    lines pointing into seqvae's own source."""
    from seqvae.registry import PluginLoadWarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginLoadWarning):
            print(f"seqvae: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def _version(plugin: Plugin) -> str | None:
    # a module named with --plugin may still belong to an installed distribution
    return plugin.version or (_distribution_version(plugin.module) if plugin.module else None)


def cmd_plugins(args) -> int:
    """`seqvae plugins`: every plugin, loaded, failed or disabled, and what each registers."""
    registry = default_registry()
    plugins = list(registry.plugins.values())
    unknown = [name for name in env_list(DISABLE_ENV) if name not in registry.plugins]
    if args.json:
        rows = [{"name": p.name, "origin": p.origin, "version": _version(p),
                 "status": "disabled" if p.disabled else "failed" if p.error else "loaded",
                 "registers": [{"kind": k, "name": n} for k, n in p.registers], "error": p.error}
                for p in plugins]  # fmt: skip
        print(json.dumps(rows, indent=1))
    else:
        loaded = [p for p in plugins if not p.disabled and not p.error]
        failed = [p for p in plugins if p.error]
        print(f"loaded ({len(loaded)}):")
        for p in loaded:
            print(f"  {p.name} {_version(p) or '(no installed version)'}  [{p.origin}]")
            for kind, name in p.registers or [("(registers nothing)", "")]:
                print(f"    {kind} {name}".rstrip())
        if failed:
            print(f"failed, skipped ({len(failed)}):")
            for p in failed:
                print(f"  {p.name} {_version(p) or ''}  [{p.origin}]: {p.error}")
                if args.debug:
                    print("    " + registry.tracebacks.get(p.name, "").rstrip().replace("\n", "\n    "))
        disabled = [p for p in plugins if p.disabled]
        if disabled or unknown:
            print(f"disabled by ${DISABLE_ENV} ({len(disabled)}):")
            for p in disabled:
                print(f"  {p.name}  [{p.origin}]")
    for name in unknown:
        print(f"seqvae: warning: ${DISABLE_ENV} names {name!r}, which is no plugin here "
              "(names as `seqvae plugins` lists them)", file=sys.stderr)  # fmt: skip
    return 0
