"""Samples from a model in TensorBoard, rendered the way the data set's values read best.

- audio (the data set has a ``sample_rate``): ``add_audio`` of the un-normalised waveform;
- categorical values: ``add_text``, through the data set's ``decode(ids) -> str`` if it has one
  (which ends a sentence at its end token, so a sample does not run on past it);
- anything else: ``add_image`` of each sequence, through the data set's
  ``sample_image(x) -> (H, W)`` if it has one (a digit), else features by time (a piano roll).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seqvae.data import Dataset


def write_samples(writer: Any, dataset: Dataset, tag: str, x: Tensor, step: int) -> None:
    """``x`` holds sequences batch-major (n, T, D) in model space."""
    x = x.detach().float().cpu()
    if dataset.sample_rate:
        for i, seq in enumerate(x):
            wave = dataset.denormalise(seq).reshape(-1).clamp(-1.0, 1.0)
            writer.add_audio(f"{tag}/audio_{i}", wave, step, sample_rate=dataset.sample_rate)
        return
    if dataset.support == "categorical":
        decode = getattr(dataset, "decode", None)
        lines = []
        for seq in x:
            ids = seq[:, 0].long().tolist()
            lines.append(decode(ids) if decode else " ".join(map(str, ids)))
        writer.add_text(f"{tag}/text", "\n\n".join(f"    {line}" for line in lines), step)
        return
    render = getattr(dataset, "sample_image", None)
    for i, seq in enumerate(x):
        image = render(seq) if render else seq.transpose(0, 1).flip(0)  # features up, time right
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
        writer.add_image(f"{tag}/sample_{i}", image.unsqueeze(0), step)
