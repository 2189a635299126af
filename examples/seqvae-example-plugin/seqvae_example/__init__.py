# seqvae_example/__init__.py
"""seqvae plugins: the ``poe`` prior and the ``csv-sequences`` data set."""
