"""seqvae: a plugin-based framework for stochastic sequence models.

The engine (this package) declares slots -- encoder, prior, decoder, likelihood, auxiliary
objectives, data sets -- and runs any composition of registered components. Models live in
plugins (``seqvae_plugins`` for the built-in ones) and compositions in ``registry.yaml``.
"""

from seqvae.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
