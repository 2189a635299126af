"""Hook specifications: the whole plugin API of seqvae.

A plugin is a module (or object) with functions marked by :data:`seqvae.hookimpl`, made
known through the entry-point group ``seqvae``::

    # pyproject.toml of your package
    [project.entry-points.seqvae]
    my-models = "my_package.seqvae_plugin"

    # my_package/seqvae_plugin.py
    from seqvae import hookimpl
    from seqvae.slots import Prior

    class LaplacePrior(Prior):
        name = "laplace"
        ...

    @hookimpl
    def seqvae_register(registry):
        registry.add(LaplacePrior)

The built-in components in ``seqvae_plugins`` are registered through exactly this path.
``docs/writing-plugins.md`` builds a plugin package step by step, with a section per hook
(``tests/test_hookspecs.py`` fails for a hook without a test or that section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from seqvae.registry import Registrar

PROJECT = "seqvae"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def seqvae_register(registry: Registrar) -> None:
    """Register components and data sets.

    Call ``registry.add(cls)`` once per class. ``cls`` subclasses one of the slot bases of
    :mod:`seqvae.slots` (likelihood, decoder, encoder, prior, aux) or
    :class:`seqvae.data.Dataset`, and carries its registered ``name`` as a class attribute.
    A name already registered for the same slot by another plugin is an error naming both.
    """
