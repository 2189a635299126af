"""Test batches drawn from a model's own likelihood, with garbage padding.

Drawing observations with ``likelihood.sample`` of random parameters gives data in the stored
format whatever the likelihood: class indices, bits or reals. Plugin authors can use these
helpers in their own component tests too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqvae.model import Noise, SequenceModel


def lengths_for(steps: int, batch: int) -> list[int]:
    """Decreasing real lengths from ``steps`` down to 1: e.g. 7, 4, 1 for three rows."""
    return [max(1, steps - (steps * i) // max(1, batch - 1)) for i in range(batch)]


@torch.no_grad()
def make_batch(
    model: SequenceModel,
    steps: int,
    batch: int,
    device: str = "cpu",
    lengths: list[int] | None = None,
    garbage: float = 5.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A time-major (u, x, mask) with u_t = x_{t-1}, observations drawn by the likelihood.

    Steps at or past a row's length hold *garbage*: other valid observations, drawn from
    parameters ``garbage`` times larger (far-off values for real-valued likelihoods), mask 0.
    """
    likelihood = model.likelihood
    params = likelihood.param_dim(model.x_dim)
    seq = likelihood.sample(torch.randn(steps + 1, batch, params, device=device))
    u, x = seq[:-1], seq[1:]
    if lengths is None:
        return u, x, torch.ones(steps, batch, device=device, dtype=seq.dtype)
    real = torch.arange(steps, device=device)[:, None] < torch.tensor(lengths, device=device)[None]
    junk = likelihood.sample(garbage * torch.randn(2, steps, batch, params, device=device))
    keep = real.unsqueeze(-1)
    return torch.where(keep, u, junk[0]), torch.where(keep, x, junk[1]), real.to(seq.dtype)


def posterior_noise(model: SequenceModel, steps: int, batch: int, device: str = "cpu") -> Noise | None:
    """Standard-normal noise that fixes every latent sample (z_t's (T, B, Z) and a static
    latent's (B, F)); None without latents."""
    return model.draw_noise(steps, batch, device, torch.get_default_dtype())
