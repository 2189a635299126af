"""``make demo``: train Z-Forcing briefly on a small synthetic data set written on the spot.

The data are noisy sums of sinusoids with random frequency and phase per sequence (8 features,
40 steps), laid out like the preprocessed TIMIT npz, so the demo runs the same code path as
``seqvae train --dataset npz``. A later issue replaces it with an embedded real corpus.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from seqvae.cli import main as cli_main


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


SMALL = [
    "model.latent_dim=16", "model.decoder.embed=64", "model.decoder.hidden=128",
    "model.encoder.embed=64", "model.encoder.hidden=128", "model.encoder.mlp=64",
    "model.prior.hidden=64", "model.aux.reconstruction.hidden=64", "train.eval_every=100",
    # a short run: anneal the KL weight to 1 within it, keep the auxiliary weight small
    "objective.kl_weight.step=0.003", "model.aux.reconstruction.weight=0.005",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = write_demo_npz(out / "demo.npz")
    overrides = [item for pair in (("--set", s) for s in SMALL) for item in pair]
    return cli_main([
        "train", "--model", "zforcing", "--dataset", "npz", "--data", str(data),
        "--max-steps", str(args.steps), "--out", str(out / "zforcing"), *overrides,
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
