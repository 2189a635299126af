"""The on-disk cache of prepared data sets.

Preparing a corpus (reading thousands of audio files, tokenising reviews, parsing scores) runs
once; its arrays are kept under ``$SEQVAE_CACHE`` (default: the user's cache folder, e.g.
``~/.cache/seqvae``) in a folder named by a hash of its key: the data set, its protocol
version, its options and a fingerprint of the source files. A changed file, option or protocol
gives a new key, so a stale cache is never used.

An entry is built in a temporary folder and renamed into place after its ``meta.json`` (the
completion marker) is written and every file is synced: a process killed half-way leaves only
a ``.partial`` folder, which is never read and is removed by a later run.

A complete entry is never changed or removed, so reading one needs no lock. Preparing one does:
each entry has a lock file (``.locks/`` under the cache root), and only its holder builds the
entry, removes what a killed preparation left, or replaces an incomplete folder. A second
process preparing the same entry waits for the first (saying so every half minute, for at most
``$SEQVAE_CACHE_WAIT`` seconds) and then uses its entry.

The lock is ``fcntl.flock``: the kernel releases it when its holder dies, however it dies
(SIGKILL included), so a crashed preparation never blocks the next one and no pid has to be
guessed alive or dead (pids mean nothing across containers sharing a cache); it belongs to an
open file, so two threads of one process exclude each other too, which ``fcntl.lockf`` locks
(per process) would not. Lock files are never deleted: a process that opened one just before
the unlink would lock the deleted file while a third created and locked a new one, and both
would build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from seqvae.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock, also released when its process dies
    fcntl = None
    import msvcrt

CACHE_ENV = "SEQVAE_CACHE"
META = "meta.json"
WAIT_ENV = "SEQVAE_CACHE_WAIT"
WAIT_SECONDS = 6 * 3600.0
"""How long a process waits for another to prepare the same entry (a large corpus takes hours)."""
REPORT_SECONDS = 30.0
POLL_SECONDS = 0.2
"""flock has no timeout, so the waiter polls; next to a preparation this costs nothing."""


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
    becomes the entry. While another process prepares the same entry, this one waits for it.
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
    with entry_lock(dataset, digest, f"the {dataset} data cache entry {final}"):
        info = read_entry(final, key)  # the process we waited for may have prepared it
        if info is None:
            _remove(parent.glob(f".{digest}.partial-*"))  # under the lock: left by killed runs
            if final.exists():  # not a complete entry (written by hand, or by an older seqvae)
                aside = parent / f".{digest}.partial-incomplete-{uuid.uuid4().hex[:8]}"
                os.rename(final, aside)  # out of the way at once, then removed
                _remove([aside])
            info = _build(parent, digest, final, key, build)
    remove_stale_partials(parent)
    return final, info


def _build(parent: Path, digest: str, final: Path, key: dict[str, Any],
           build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
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
        os.rename(tmp, final)
        _fsync_folder(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_entry(final, key) or info


def read_entry(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The info of a complete entry written for ``key``, else None."""
    try:
        meta = json.loads((folder / META).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    except OSError as error:  # unreadable is not incomplete: never rebuild (and remove) it
        raise UserError(f"{folder / META}: cannot read the data cache entry ({error}); set ${CACHE_ENV}") from error
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        return None
    same_key = json.dumps(meta.get("key"), sort_keys=True, default=str) == json.dumps(
        key, sort_keys=True, default=str
    )
    return meta.get("info") if same_key else None


def lock_path(dataset: str, digest: str) -> Path:
    # beside the entries, not among them: a data set's folder holds only entries and partials
    return cache_root() / ".locks" / f"{dataset}-{digest}.lock"


@contextmanager
def entry_lock(dataset: str, digest: str, what: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock of one entry, waiting up to ``wait`` seconds (default ``$SEQVAE_CACHE_WAIT``)
    for another process that holds it; ``what`` names the entry in the messages."""
    path = lock_path(dataset, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        if not _try_lock(handle, path):
            _wait(handle, path, what, _wait_seconds() if wait is None else wait)
        try:
            handle.truncate(0)  # who holds it, for the message of the next process
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            _unlock(handle)


def _wait(handle: IO[str], path: Path, what: str, wait: float) -> None:
    start = last = time.monotonic()
    holder = _holder(path)
    print(f"seqvae: waiting for another process ({holder}) to prepare {what}; at most {wait:.0f} s "
          f"(${WAIT_ENV})", file=sys.stderr, flush=True)  # fmt: skip
    while not _try_lock(handle, path):
        now = time.monotonic()
        if now - start >= wait:
            raise UserError(
                f"{what}: another process ({_holder(path)}) has been preparing it for over {wait:.0f} s; "
                f"let it finish and run again, or set ${WAIT_ENV} to wait longer (seconds)"
            )
        if now - last >= REPORT_SECONDS:
            print(f"seqvae: still waiting for {what} ({now - start:.0f} s)", file=sys.stderr, flush=True)
            last = now
        time.sleep(POLL_SECONDS)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown pid"
    except OSError:
        return "unknown pid"


def _wait_seconds() -> float:
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return WAIT_SECONDS
    try:
        return max(0.0, float(text))
    except ValueError:
        raise UserError(f"${WAIT_ENV}: expected a number of seconds, got {text!r}") from None


def _try_lock(handle: IO[str], path: Path) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return True
    except BlockingIOError:
        return False
    except OSError as error:
        if fcntl is None:  # msvcrt says "locked" with EACCES or EDEADLOCK
            return False
        raise UserError(f"cannot lock {path} ({error}); set ${CACHE_ENV} to a folder on a local disk") from error


def _unlock(handle: IO[str]) -> None:
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    else:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


def remove_stale_partials(parent: Path) -> None:
    """Remove ``.partial`` folders of entries nobody is preparing (their lock is free): what
    killed runs left. A partial whose entry is locked is another process's work in progress."""
    digests = {path.name[1:].split(".partial-")[0] for path in parent.glob(".*.partial-*")}
    for digest in digests:
        path = lock_path(parent.name, digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a+") as handle:
                if _try_lock(handle, path):
                    try:
                        _remove(parent.glob(f".{digest}.partial-*"))
                    finally:
                        _unlock(handle)
        except (OSError, UserError):  # cleaning up is a courtesy, never a reason to fail
            continue


def _remove(paths: Iterable[Path]) -> None:
    for path in list(paths):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    if path.is_file():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open folders)."""
    if fcntl is None:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
