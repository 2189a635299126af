"""Small synthetic data sets for tests: written on the spot, no corpus needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_demo_npz(path: Path, seed: int = 0, dims: int = 8, steps: int = 40) -> Path:
    """Synthetic sequences in the npz layout: u_t = x_{t-1}, test rows padded with a mask."""
    rng = np.random.default_rng(seed)

    def sequences(n: int) -> np.ndarray:
        t = np.arange(steps + 1)[None, :, None]
        freq = rng.uniform(0.05, 0.3, size=(n, 1, dims))
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1, dims))
        signal = np.sin(2 * np.pi * freq * t + phase) + 0.1 * rng.standard_normal((n, steps + 1, dims))
        return signal.astype(np.float32)

    arrays = {}
    for split, n in (("train", 512), ("valid", 64), ("test", 64)):
        seq = sequences(n)
        arrays[f"u_{split}"], arrays[f"x_{split}"] = seq[:, :-1], seq[:, 1:]
    lengths = rng.integers(steps // 2, steps + 1, size=64)
    mask = (np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32)
    arrays["mask_test"] = mask
    arrays["u_test"] *= mask[..., None]
    arrays["x_test"] *= mask[..., None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
