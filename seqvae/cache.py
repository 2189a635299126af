"""The on-disk cache of prepared data sets.

Preparing a corpus (reading thousands of audio files, tokenising reviews, parsing scores) runs
once; its arrays are kept under ``$SEQVAE_CACHE`` (default: the user's cache folder, e.g.
``~/.cache/seqvae``) in a folder named by a hash of its key: the data set, its protocol
version, its options and a fingerprint of the source files. A changed file, option or protocol
gives a new key, so a stale cache is never used.

An entry is built in a temporary folder and renamed into place after its ``meta.json`` (the
completion marker) is written and every file is synced: a process killed half-way leaves only
a ``.partial`` folder, which is never read and is removed by a later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from seqvae.errors import UserError

CACHE_ENV = "SEQVAE_CACHE"
META = "meta.json"
STALE_SECONDS = 24 * 3600
"""A partial folder whose process cannot be checked is removed after this long."""


def cache_root() -> Path:
    """``$SEQVAE_CACHE``, else the platform's user cache folder plus ``seqvae``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "seqvae"


def fingerprint(files: Iterable[Path], root: Path | None = None) -> str:
    """A hash of the files' names (relative to ``root``), sizes and modification times."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        name = path.relative_to(root).as_posix() if root is not None else str(path)
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(
    dataset: str, key: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any]]:
    """The folder of the complete cache entry for ``key`` and the info its builder returned.

    When there is none, ``build(folder)`` writes its files into an empty temporary folder and
    returns a JSON-able dict of what a reader needs (shapes, statistics); the folder then
    becomes the entry.
    """
    parent = cache_root() / dataset
    digest = key_digest(key)
    final = parent / digest
    info = read_entry(final, key)
    if info is not None:
        return final, info
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create the data cache {parent} ({error}); set ${CACHE_ENV}"
        ) from error
    remove_stale_partials(parent)
    if final.exists():  # not a complete entry (written by hand, or by an older seqvae)
        shutil.rmtree(final, ignore_errors=True)
    tmp = parent / f".{digest}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        info = build(tmp)
        for path in tmp.iterdir():
            _fsync(path)
        meta = {"complete": True, "key": key, "info": info, "created": time.time()}
        with (tmp / META).open("w") as handle:
            json.dump(meta, handle, indent=1, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if read_entry(final, key) is None:  # not another process finishing first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            info = read_entry(final, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, info


def read_entry(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The info of a complete entry written for ``key``, else None."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    same_key = json.dumps(meta.get("key"), sort_keys=True, default=str) == json.dumps(
        key, sort_keys=True, default=str
    )
    if meta.get("complete") is not True or not same_key:
        return None
    return meta.get("info")


def remove_stale_partials(parent: Path) -> None:
    """Remove ``.partial`` folders whose process is gone (killed runs)."""
    for path in parent.glob(".*.partial-*"):
        try:
            pid = int(path.name.split(".partial-")[1].split("-")[0])
        except (IndexError, ValueError):
            pid = None
        if pid == os.getpid():
            continue
        if pid is not None and _alive(pid):
            try:
                if time.time() - path.stat().st_mtime < STALE_SECONDS:
                    continue
            except OSError:
                continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _fsync(path: Path) -> None:
    if path.is_file():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
