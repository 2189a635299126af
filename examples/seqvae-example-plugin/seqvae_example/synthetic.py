# seqvae_example/synthetic.py
"""Noisy sine waves as CSV files, to try ``csv-sequences`` without data of your own:
``python -m seqvae_example.synthetic FOLDER [FILES]``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def write_sines(folder: Path, files: int = 24, features: int = 2, seed: int = 0) -> Path:
    """``files`` CSV files of 20-40 steps each, ``features`` noisy sines per step."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        t = np.arange(rng.integers(20, 41))[:, None]
        freq, phase = rng.uniform(0.05, 0.3, features), rng.uniform(0, 2 * np.pi, features)
        values = np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.standard_normal((len(t), features))
        np.savetxt(folder / f"sequence{i:03d}.csv", values, delimiter=",", fmt="%.5f")
    return folder


if __name__ == "__main__":
    print(write_sines(Path(sys.argv[1]), *map(int, sys.argv[2:3])))
