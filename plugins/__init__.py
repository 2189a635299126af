"""Built-in seqvae plugins, installed as the package ``seqvae_plugins``.

Each module registers its components through the ``seqvae_register`` hook and is listed as its
own entry point in the ``seqvae`` group, exactly like a third-party plugin.
"""
