"""Checkpoints: plain dicts of tensors and primitives, written atomically.

A checkpoint holds ``model`` and ``optimizer`` state dicts, the resolved ``composition`` (as in
config.yaml), ``x_dim``, ``step``, ``seed`` and ``metrics``; it loads with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqvae.composition import Composition, build_model, validate
from seqvae.errors import UserError
from seqvae.model import SequenceModel
from seqvae.registry import Registry, default_registry


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash mid-write leaves
    the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable seqvae checkpoint ({error})") from error


def model_from_checkpoint(
    checkpoint: dict[str, Any], registry: Registry | None = None, source: str = "<checkpoint>"
) -> tuple[SequenceModel, Composition]:
    """Rebuild the composition and model of a checkpoint and load its weights."""
    for key in ("composition", "model", "x_dim"):
        if key not in checkpoint:
            raise UserError(f"{source}: not a seqvae checkpoint (no {key!r} entry)")
    registry = registry or default_registry()
    comp = validate(checkpoint["composition"], registry, source=source, name=checkpoint.get("name", "model"))
    model = build_model(comp, checkpoint["x_dim"], registry)
    model.load_state_dict(checkpoint["model"])
    return model, comp
