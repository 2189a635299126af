"""Plugin loading and the component registry.

Every plugin, built-in or third-party, is an entry point in the group ``seqvae`` and is loaded
on its own: one that fails to import is reported by name with its traceback as a warning, and
the others still load. Names are unique per slot; a clash is an error naming both providers.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import traceback
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType

import pluggy

from seqvae import hookspecs
from seqvae.errors import UserError

KINDS = ("likelihood", "decoder", "encoder", "prior", "aux", "dataset")
"""Registry kinds: the model slots and data sets."""

PLUGINS_ENV = "SEQVAE_PLUGINS"
"""Comma-separated extra plugin modules to load without packaging them (handy in notebooks)."""


class PluginLoadWarning(UserWarning):
    """A plugin failed to load; the rest of seqvae still works."""


@dataclass(frozen=True)
class Entry:
    """One registered class and the plugin that provided it."""

    kind: str
    name: str
    cls: type
    provider: str


class Registry:
    """All registered components, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.failed: dict[str, str] = {}  # plugin name -> traceback

    def add(self, cls: type, provider: str) -> None:
        kind = getattr(cls, "slot", None)
        name = getattr(cls, "name", None)
        if kind not in self._entries:
            raise UserError(
                f"plugin {provider!r}: {cls.__qualname__} has slot {kind!r}; "
                f"expected a subclass of a slot base ({', '.join(KINDS)})"
            )
        if not isinstance(name, str) or not name:
            raise UserError(f"plugin {provider!r}: {cls.__qualname__} has no class attribute `name`")
        known = self._entries[kind].get(name)
        if known is not None and known.cls is not cls:
            raise UserError(
                f"{kind} {name!r} is registered twice: by plugin {known.provider!r} "
                f"({known.cls.__module__}.{known.cls.__qualname__}) and by plugin {provider!r} "
                f"({cls.__module__}.{cls.__qualname__}); rename one of them"
            )
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
    """What a plugin's ``seqvae_register`` hook receives: adds classes under its own name."""

    def __init__(self, registry: Registry, provider: str) -> None:
        self._registry = registry
        self.provider = provider

    def add(self, cls: type) -> None:
        """Register ``cls`` under ``cls.name`` in the slot given by its base class."""
        self._registry.add(cls, self.provider)


def build_registry(extra: list[ModuleType | object] | None = None) -> Registry:
    """Load every plugin of the entry-point group, plus ``extra`` objects and $SEQVAE_PLUGINS."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry()

    def try_register(name: str, load) -> None:
        try:
            manager.register(load(), name=name)
        except Exception:  # one broken plugin must not take the tool down
            registry.failed[name] = traceback.format_exc()
            warnings.warn(
                f"seqvae plugin {name!r} failed to load and is skipped:\n{registry.failed[name]}",
                PluginLoadWarning,
                stacklevel=3,
            )

    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        dist = getattr(ep, "dist", None)
        try_register(f"{dist.name}:{ep.name}" if dist else ep.name, ep.load)
    for module in (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()):
        try_register(module, partial(importlib.import_module, module))
    for i, plugin in enumerate(extra or []):
        name = getattr(plugin, "__name__", f"extra-{i}")
        if manager.is_registered(plugin) or manager.has_plugin(name):
            continue
        manager.register(plugin, name=name)

    # Each implementation is called with a registrar stamped with its own plugin's name, so
    # that a clash can name both providers.
    for impl in manager.hook.seqvae_register.get_hookimpls():
        impl.function(registry=Registrar(registry, impl.plugin_name))
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of installed plugins, built once per process."""
    return build_registry()
