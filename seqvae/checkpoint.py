"""Checkpoints: plain dicts of tensors and primitives, written atomically.

A checkpoint holds ``model`` and ``optimizer`` state dicts, the resolved ``composition`` (as in
config.yaml), ``x_dim``, ``step``, ``seed`` and the rest of the run's state (see
:mod:`seqvae.run_state`); it loads with ``torch.load(path, weights_only=True)``, and nothing
else is ever used to read one: a file that needs more than tensors and primitives is refused.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seqvae.composition import Composition, build_model, validate
from seqvae.errors import UserError
from seqvae.model import SequenceModel
from seqvae.registry import Registry, default_registry

REQUIRED = ("composition", "model", "x_dim")
"""Entries every seqvae checkpoint has."""

PAUSE_ENV = "SEQVAE_TEST_CHECKPOINT_PAUSE"
"""Read by tests only: seconds :func:`save_checkpoint` waits between writing the temporary file
and renaming it, so that a test can kill a run in the middle of a checkpoint write."""


def atomic_write_bytes(path: Path, write, before_rename: Callable[[], None] | None = None) -> None:
    """Write through a temporary file in the same folder, fsync it, rename it over ``path`` and
    fsync the folder: a crash at any moment leaves either the previous file or the new one,
    complete, and after the folder's fsync the rename itself survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:  # POSIX only: elsewhere (Windows) a folder cannot be opened, and a rename is durable
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is done anyway
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete what a killed writer left behind (``.NAME.*.tmp``). Only for a folder this
    process holds the run lock of: another writer's temporary file would be removed too."""
    if folder.is_dir():
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def _test_pause() -> None:
    time.sleep(float(os.environ[PAUSE_ENV]))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    pause = _test_pause if os.environ.get(PAUSE_ENV) else None
    atomic_write_bytes(Path(path), lambda handle: torch.save(payload, handle), before_rename=pause)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A seqvae checkpoint, read with ``weights_only=True``; any other file is a one-line
    :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # PyTorch warns about old pickle protocols on stderr
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a pickled object, a truncated or a foreign file
        raise UserError(f"{path}: {_unreadable(error, path)}") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: not a seqvae checkpoint (it holds a {type(checkpoint).__name__}, not a dict)")
    missing = [key for key in REQUIRED if key not in checkpoint]
    if missing:
        raise UserError(f"{path}: not a seqvae checkpoint (a dict without the {', '.join(map(repr, missing))} entries "
                        "that seqvae train writes)")  # fmt: skip
    return checkpoint


def _unreadable(error: Exception, path: Path) -> str:
    """Why a file did not load, in our words. PyTorch's own message for a refused pickle advises
    re-running with weights_only=False, which would run whatever the file holds: never shown."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"refused: it needs the Python object {refused.group(1)} to load; seqvae checkpoints hold "
                "only tensors and primitives, so a file that needs more is not one (and loading it could run "
                "code)")  # fmt: skip
    if isinstance(error, PermissionError):
        return f"cannot be read ({error.strerror})"
    with path.open("rb") as handle:
        zipped = handle.read(2) == b"PK"  # torch.save writes a zip archive; a cut one fails in several ways
    if isinstance(error, EOFError) or zipped or "zip archive" in text:
        return ("not a readable seqvae checkpoint: the file is empty, truncated or corrupted "
                "(copied or downloaded only in part?)")
    if isinstance(error, pickle.UnpicklingError | KeyError | ValueError) or "Weights only" in text:
        return "not a seqvae checkpoint: not a file written by torch.save of tensors and primitives"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"not a readable seqvae checkpoint ({type(error).__name__}: {first[:200]})"


def model_from_checkpoint(
    checkpoint: dict[str, Any], registry: Registry | None = None, source: str = "<checkpoint>"
) -> tuple[SequenceModel, Composition]:
    """Rebuild the composition and model of a checkpoint and load its weights."""
    if not isinstance(checkpoint, dict):
        raise UserError(f"{source}: not a seqvae checkpoint (it holds a {type(checkpoint).__name__}, not a dict)")
    for key in REQUIRED:
        if key not in checkpoint:
            raise UserError(f"{source}: not a seqvae checkpoint (no {key!r} entry)")
    if not isinstance(checkpoint["composition"], dict) or not isinstance(checkpoint["model"], dict):
        raise UserError(f"{source}: not a seqvae checkpoint (its composition or model entry is not a mapping)")
    registry = registry or default_registry()
    comp = validate(checkpoint["composition"], registry, source=source, name=checkpoint.get("name", "model"))
    if not isinstance(checkpoint["x_dim"], int) or checkpoint["x_dim"] < 1:
        raise UserError(f"{source}: not a seqvae checkpoint (x_dim is {checkpoint['x_dim']!r})")
    model = build_model(comp, checkpoint["x_dim"], registry)
    problem = weights_mismatch(model.state_dict(), checkpoint["model"])
    if problem:
        raise UserError(f"{source}: its weights do not fit its composition ({problem}); "
                        "the file was not written by seqvae train for this composition")  # fmt: skip
    model.load_state_dict(checkpoint["model"])
    return model, comp


def weights_mismatch(expected: dict[str, Any], weights: dict[str, Any]) -> str:
    """What differs between a model's state dict and ``weights`` ('' when they fit), in a few
    words: load_state_dict's own message spans many lines."""
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    wrong = [key for key in expected if key in weights and
             (not isinstance(weights[key], torch.Tensor) or weights[key].shape != expected[key].shape)]  # fmt: skip
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    if wrong:
        key, got = wrong[0], weights[wrong[0]]
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        parts.append(f"{len(wrong)} of another shape, e.g. {key} is {shape}, expected {tuple(expected[key].shape)}")
    return "; ".join(parts)
