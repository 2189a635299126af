"""One run per folder: a lock file in the run folder, held while a process trains there.

The lock is ``fcntl.flock`` on ``OUT/run.lock``. An OS lock rather than a pid file because the
kernel releases it when its holder dies, however it dies (SIGKILL included): a dead run's lock is
taken over with no guessing whether a recorded pid is still ours or was reused by another
program, and taking it is atomic (no check-then-write race between two starting processes). The
file is never deleted: a process that opened it just before the unlink would lock the deleted
file while a third created and locked a new one, and both would run. The file also records who
holds it (pid, host), for the message the next process gets.

Where there is no ``fcntl`` (Windows), or the file system refuses flock (some network mounts),
the lock falls back to that pid file check: the folder is refused while the recorded process is
alive on this host (or, recorded on another host, while the file exists), and taken over
otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from seqvae.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = "run.lock"

_HELD: dict[Path, int] = {}
"""Folders this process holds, with how many RunLocks hold each: a lock taken again inside the
same process (seqvae bench around train) is the same hold, not a second run."""


class RunFolderInUse(UserError):
    """Another live process trains in this folder."""


class RunLock:
    """``with RunLock(folder):`` holds ``folder`` for this process, or raises RunFolderInUse."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._handle = None
        self._pid_file = False
        self._nested = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder.resolve()
        if _HELD.get(key):
            _HELD[key] += 1
            self._nested = True
            return
        self._take()
        _HELD[key] = 1

    def release(self) -> None:
        if not (self._nested or self._pid_file or self._handle is not None):
            return  # not held by this object
        key = self.folder.resolve()
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
        if self._nested:
            self._nested = False
            return
        if self._handle is not None:  # closing the file releases the flock
            self._handle.close()
            self._handle = None
        elif self._pid_file:  # no lock outlives the file: it goes, if still ours
            self._pid_file = False
            if self.path.exists() and _holder(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def _take(self) -> None:
        if fcntl is None:
            self._acquire_pid_file()
            return
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by a live process (a dead one's lock is gone with it)
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise self._in_use(holder) from None
        except OSError:  # a file system without flock (some network mounts): the pid file
            handle.close()
            self._acquire_pid_file()
            return
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_me()))
        handle.flush()
        self._handle = handle

    def _acquire_pid_file(self) -> None:
        holder = _holder(self.path.read_text()) if self.path.exists() else {}
        pid, host = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and pid != os.getpid():
            if host != socket.gethostname() or _alive(pid):  # another host's pid cannot be checked
                raise self._in_use(holder)
        self.path.write_text(json.dumps(_me()))
        self._pid_file = True

    def _in_use(self, holder: dict) -> RunFolderInUse:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f", since {holder['started']}" if "started" in holder else ""
        return RunFolderInUse(
            f"{self.folder}: in use by another seqvae process ({who}{since}); "
            f"wait for it to end, stop it, or use another --out (lock file {self.path})"
        )


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:  # empty: the holder is between taking the lock and writing its name
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (the pid file fallback only)."""
    if os.name == "nt":  # os.kill with signal 0 would terminate the process on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
