"""Plugin modules made on the spot, as a third party would write one, for tests that register
classes (good or deliberately broken) through the real hook."""

from __future__ import annotations

import types

from seqvae import hookimpl


def plugin_module(name: str, *classes: type, fail: bool = False) -> types.ModuleType:
    """A module named ``name`` whose ``seqvae_register`` adds ``classes`` (then raises, with
    ``fail``); pass it to ``build_registry(extra=[...])``."""
    module = types.ModuleType(name)

    @hookimpl
    def seqvae_register(registry) -> None:
        for cls in classes:
            registry.add(cls)
        if fail:
            raise RuntimeError("the hook broke after adding its classes")

    module.seqvae_register = seqvae_register
    return module
