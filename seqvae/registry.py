"""Plugin loading and the component registry.

Every plugin, built-in or third-party, is an entry point in the group ``seqvae`` (or a module
the user names with ``--plugin MODULE`` or ``$SEQVAE_PLUGINS``) and is loaded on its own. A
plugin that fails to import, or that registers an invalid component (wrong slot, no name, a
name another plugin has, ``Options`` that is not a dataclass of supported types), is named and
skipped as a whole, and the others still load; with ``--strict-plugins`` or
``$SEQVAE_STRICT_PLUGINS=1`` that is an error instead. ``$SEQVAE_DISABLE_PLUGINS`` names
plugins (as ``seqvae plugins`` shows them) not to load at all.

Trust: the only code that runs is the code of installed entry points and of modules the user
names; no string from a composition, a data option or a checkpoint is ever imported.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import pluggy

from seqvae import hookspecs
from seqvae.errors import UserError

KINDS = ("likelihood", "static", "decoder", "encoder", "prior", "aux", "dataset")
"""Registry kinds: the model slots and data sets."""
ENGINE_KEYS: dict[str, set[str]] = {"encoder": {"flow"}, "aux": {"weight"}}
"""Keys of a slot's YAML mapping that the engine reads itself (the encoder's flow, an auxiliary
objective's weight schedule), so no component of that kind may have an option of that name."""

PLUGINS_ENV = "SEQVAE_PLUGINS"
"""Comma-separated extra plugin modules to load without packaging them (handy in notebooks)."""
STRICT_ENV = "SEQVAE_STRICT_PLUGINS"
"""``1``: a plugin that fails to load is an error, not a warning."""
DISABLE_ENV = "SEQVAE_DISABLE_PLUGINS"
"""Comma-separated plugin names (as ``seqvae plugins`` shows them) not to load."""


class PluginLoadWarning(UserWarning):
    """A plugin failed to load; the rest of seqvae still works."""


class PluginError(UserError):
    """A plugin failed to load and plugins are strict (or the plugin was passed in code)."""


class InvalidComponent(UserError):
    """A plugin tried to register a class the registry cannot use."""


@dataclass(frozen=True)
class Entry:
    """One registered class and the plugin that provided it."""

    kind: str
    name: str
    cls: type
    provider: str


@dataclass
class Plugin:
    """What ``seqvae plugins`` reports about one plugin."""

    name: str
    origin: str
    """Where it came from: ``entry point NAME = MODULE``, ``--plugin``, ``$SEQVAE_PLUGINS``."""
    module: str = ""
    version: str | None = None
    """The version of the distribution that installs it (None: not known here)."""
    registers: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of every class it registered."""
    error: str | None = None
    """One line: why it was skipped."""
    disabled: bool = False


class Registry:
    """All registered components, by kind and name, and the plugins that loaded or failed."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, Plugin] = {}
        self.failed: dict[str, str] = {}  # plugin name -> one-line error
        self.tracebacks: dict[str, str] = {}  # plugin name -> the traceback, for --debug

    def check(self, cls: object, provider: str, staged: dict[tuple[str, str], type] | None = None) -> tuple[str, str]:
        """(kind, name) of a class that can be registered for ``provider``, else
        :class:`InvalidComponent` saying what is wrong with it."""
        if not isinstance(cls, type):
            raise InvalidComponent(f"registry.add() expects a class, got {cls!r}")
        what = f"{cls.__module__}.{cls.__qualname__}"
        kind = getattr(cls, "slot", None)
        if kind not in self._entries:
            raise InvalidComponent(
                f"{what} has slot {kind!r}; expected a subclass of a slot base ({', '.join(KINDS)})"
            )
        base = _bases()[kind]
        if not issubclass(cls, base):
            raise InvalidComponent(f"{what} has slot {kind!r} but does not subclass {base.__module__}.{base.__name__}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InvalidComponent(f"{what} has no usable class attribute `name` (got {name!r})")
        from seqvae.options import options_class_problem

        problem = options_class_problem(getattr(cls, "Options", None))
        if problem:
            raise InvalidComponent(f"{what}.Options: {problem}")
        taken = sorted(ENGINE_KEYS.get(kind, set()) & {f.name for f in dataclasses.fields(cls.Options)})
        if taken:
            raise InvalidComponent(
                f"{what}.Options: option {taken[0]!r} is a key the engine reads itself in every "
                f"{kind} slot; rename the option"
            )
        known = self._entries[kind].get(name)
        if known is not None and known.cls is not cls:
            raise InvalidComponent(
                f"{kind} {name!r} is registered twice: by plugin {known.provider!r} "
                f"({known.cls.__module__}.{known.cls.__qualname__}) and by plugin {provider!r} "
                f"({what}); rename one of them"
            )
        if staged is not None and staged.get((kind, name), cls) is not cls:
            raise InvalidComponent(f"{kind} {name!r} is registered twice by plugin {provider!r}")
        return kind, name

    def add(self, cls: type, provider: str) -> None:
        """Register ``cls`` now (an invalid class raises :class:`InvalidComponent`)."""
        kind, name = self.check(cls, provider)
        self._entries[kind][name] = Entry(kind, name, cls, provider)

    def get(self, kind: str, name: str, path: str = "") -> Entry:
        """The entry for ``name``, or a :class:`UserError` listing close matches."""
        entries = self._entries[kind]
        if name in entries:
            return entries[name]
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        where = f"{path}: " if path else ""
        raise UserError(
            f"{where}unknown {kind} {name!r}{hint} (registered: {', '.join(sorted(entries))})"
        )

    def find(self, kind: str, name: str) -> Entry | None:
        """The entry for ``name``, or None."""
        return self._entries[kind].get(name)

    def entries(self, kind: str) -> list[Entry]:
        return sorted(self._entries[kind].values(), key=lambda e: e.name)


class Registrar:
    """What a plugin's ``seqvae_register`` hook receives: adds classes under its own name.

    Classes are checked as they are added (so that an error points at the plugin's line) and
    registered only when the whole hook has run: a plugin is registered completely or not at all.
    """

    def __init__(self, registry: Registry, provider: str) -> None:
        self._registry = registry
        self.provider = provider
        self.staged: dict[tuple[str, str], type] = {}

    def add(self, cls: type) -> None:
        """Register ``cls`` under ``cls.name`` in the slot given by its base class."""
        key = self._registry.check(cls, self.provider, self.staged)
        self.staged[key] = cls

    def commit(self) -> list[tuple[str, str]]:
        for (kind, name), cls in self.staged.items():
            self._registry._entries[kind][name] = Entry(kind, name, cls, self.provider)
        return list(self.staged)


def _bases() -> dict[str, type]:
    # imported here: seqvae.slots and seqvae.data import torch, which the registry itself doesn't need
    from seqvae.data import Dataset
    from seqvae.slots import SLOTS

    return {**SLOTS, "dataset": Dataset}


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, with the plugin's file and line where it raised."""
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if isinstance(error, (InvalidComponent, SyntaxError)):  # already says where
        return text
    # the innermost line of the plugin's own code: not importlib's machinery, not seqvae's
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith("<") and Path(f.filename).parent != Path(__file__).parent]  # fmt: skip
    if frames:
        text += f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return text


def env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_registry(
    extra: list[ModuleType | object] | None = None,
    modules: tuple[str, ...] | list[str] = (),
    strict: bool | None = None,
    disabled: tuple[str, ...] | list[str] | None = None,
) -> Registry:
    """Load every plugin of the entry-point group, the ``modules`` the user named (``--plugin``)
    and those of $SEQVAE_PLUGINS, then the ``extra`` objects (a plugin's own tests).

    ``strict`` (default $SEQVAE_STRICT_PLUGINS) makes a failing plugin a :class:`PluginError`;
    ``disabled`` (default $SEQVAE_DISABLE_PLUGINS) names plugins not to load. A failure of an
    ``extra`` object is always an error: the caller asked for it in code.
    """
    strict = env_flag(STRICT_ENV) if strict is None else strict
    disabled = set(env_list(DISABLE_ENV) if disabled is None else disabled)
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    explicit: set[str] = set()

    def fail(name: str, error: BaseException, fatal: bool) -> None:
        registry.plugins[name].error = registry.failed[name] = one_line(error)
        registry.tracebacks[name] = "".join(traceback.format_exception(error))
        if fatal:
            strictly = f"plugins are strict (--strict-plugins or ${STRICT_ENV})"
            reason = "it was passed in code" if name in explicit else strictly
            raise PluginError(
                f"plugin {name!r} failed to load: {registry.failed[name]}; {reason}: fix the plugin, "
                f"or skip it with {DISABLE_ENV}={name}"
            ) from error
        warnings.warn(
            f"plugin {name!r} failed to load and is skipped: {registry.failed[name]} "
            f"(`seqvae plugins` lists it; {DISABLE_ENV}={name} stops loading it)",
            PluginLoadWarning,
            stacklevel=3,
        )

    def load(plugin: Plugin, loader: Callable[[], object]) -> None:
        registry.plugins[plugin.name] = plugin
        if plugin.name in disabled:
            plugin.disabled = True
            return
        try:  # one broken plugin must not take the tool down
            obj = loader()
            if manager.is_registered(obj):  # --plugin naming an installed plugin's module: loaded once
                del registry.plugins[plugin.name]
                return
            manager.register(obj, name=plugin.name)
        except Exception as error:
            fail(plugin.name, error, strict)

    for name, ep in _entry_points():
        dist = getattr(ep, "dist", None)
        plugin = Plugin(name, f"entry point {ep.name} = {ep.value}", ep.value.partition(":")[0],
                        dist.version if dist is not None else None)  # fmt: skip
        load(plugin, ep.load)
    for origin, names in (("--plugin", modules), (f"${PLUGINS_ENV}", env_list(PLUGINS_ENV))):
        for module in names:
            if module not in registry.plugins:
                load(Plugin(module, origin, module), _importer(module))
    for i, obj in enumerate(extra or []):
        name = getattr(obj, "__name__", f"extra-{i}")
        if manager.is_registered(obj) or manager.has_plugin(name):
            continue
        explicit.add(name)
        registry.plugins[name] = Plugin(name, "passed in code", name)
        try:
            manager.register(obj, name=name)
        except Exception as error:
            fail(name, error, True)

    # Each implementation is called with a registrar stamped with its own plugin's name, so
    # that a clash can name both providers.
    for impl in manager.hook.seqvae_register.get_hookimpls():
        registrar = Registrar(registry, impl.plugin_name)
        try:
            impl.function(registry=registrar)
        except Exception as error:
            fail(impl.plugin_name, error, strict or impl.plugin_name in explicit)
            continue
        registry.plugins[impl.plugin_name].registers = registrar.commit()
    return registry


def _entry_points() -> list[tuple[str, importlib.metadata.EntryPoint]]:
    """(plugin name, entry point), seqvae's own first and then by name, so that which of two
    clashing plugins is skipped does not depend on the order of sys.path."""
    named = []
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        dist = getattr(ep, "dist", None)
        named.append((f"{dist.name}:{ep.name}" if dist else ep.name, ep))
    return sorted(named, key=lambda item: (not item[0].startswith("seqvae:"), item[0]))


def _importer(module: str) -> Callable[[], object]:
    def load() -> object:
        return importlib.import_module(module)

    return load


@dataclass(frozen=True)
class _Settings:
    modules: tuple[str, ...] = ()
    strict: bool = False


_cli = _Settings()


def configure(modules: tuple[str, ...] | list[str] = (), strict: bool = False) -> None:
    """What the command line asked for (``--plugin``, ``--strict-plugins``); the environment
    variables add to it. Takes effect at the next :func:`default_registry`."""
    global _cli
    _cli = _Settings(tuple(modules), bool(strict))


def default_registry() -> Registry:
    """The registry of installed plugins and of those the user named, built once per process
    and setting (a changed $SEQVAE_PLUGINS or --plugin gives a fresh one)."""
    strict = _cli.strict or env_flag(STRICT_ENV)
    return _cached_registry(_cli.modules, env_list(PLUGINS_ENV), strict, env_list(DISABLE_ENV))


@lru_cache(maxsize=4)
def _cached_registry(modules: tuple[str, ...], env_modules: tuple[str, ...], strict: bool,
                     disabled: tuple[str, ...]) -> Registry:  # fmt: skip
    # env_modules is part of the key only: build_registry reads the variable itself
    return build_registry(modules=modules, strict=strict, disabled=disabled)


def distribution_version(module: str) -> str | None:
    """The version of the installed distribution that provides ``module``, if any."""
    top = module.partition(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


__all__ = ["KINDS", "Entry", "Plugin", "PluginError", "Registry", "build_registry", "configure", "default_registry"]
