"""Two processes preparing one cache entry: one builds, the other waits and reuses it, and a
complete entry is never removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import seqvae.cache
from seqvae.cache import cache_root, cached, entry_lock, key_digest
from seqvae.errors import UserError

KEY = {"dataset": "toy", "protocol": 1, "source": "abc"}

# A builder that announces itself, then waits for the test's go-ahead: the second process is
# started and seen waiting while the first is in the middle of building.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from seqvae.cache import cached

    log, release = Path(sys.argv[1]), Path(sys.argv[2])

    def slow(folder):
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\\n")
        print("building", flush=True)
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (folder / "a.bin").write_bytes(b"x" * 10)
        return {"n": 10, "by": os.getpid()}

    folder, info = cached("toy", {"dataset": "toy", "protocol": 1, "source": "abc"}, slow)
    print(json.dumps({"folder": str(folder), "info": info}), flush=True)
    """
)


def _start(tmp_path: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "SEQVAE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "builds"), str(tmp_path / "release")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def test_two_processes_preparing_one_entry_build_it_once(tmp_path, _data_cache):
    first = _start(tmp_path, _data_cache)
    second = None
    try:
        assert first.stdout.readline().strip() == "building"
        second = _start(tmp_path, _data_cache)
        waiting = second.stderr.readline()
        assert "waiting for another process (pid" in waiting and "to prepare the toy data cache entry" in waiting
        assert str(first.pid) in waiting  # the holder is named
        (tmp_path / "release").touch()
        results = []
        for child in (first, second):
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
    assert (tmp_path / "builds").read_text().split() == [str(first.pid)]  # built once
    assert results[0] == results[1] and results[0]["info"] == {"n": 10, "by": first.pid}
    folder = Path(results[0]["folder"])
    assert (folder / "a.bin").read_bytes() == b"x" * 10 and (folder / "meta.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no partials left


def test_a_complete_entry_that_appears_while_looking_is_kept(monkeypatch):
    # Another process completes the entry just after this one found none: before the lock,
    # this process would remove the complete entry as "incomplete" and build it again.
    calls = []

    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "a.bin").write_bytes(b"first")
        return {"n": 1}

    folder, _ = cached("toy", KEY, build)
    inode = (folder / "a.bin").stat().st_ino
    real, looks = seqvae.cache.read_entry, []

    def first_look_misses(folder: Path, key: dict):
        looks.append(folder)
        return None if len(looks) == 1 else real(folder, key)

    monkeypatch.setattr(seqvae.cache, "read_entry", first_look_misses)
    again, info = cached("toy", KEY, build)
    assert len(looks) == 2  # it looked again, under the entry's lock
    assert again == folder and info == {"n": 1} and len(calls) == 1
    assert (folder / "a.bin").stat().st_ino == inode and (folder / "a.bin").read_bytes() == b"first"


def test_waiting_gives_up_after_seqvae_cache_wait_naming_the_holder(monkeypatch, capsys):
    monkeypatch.setenv("SEQVAE_CACHE_WAIT", "0.5")
    monkeypatch.setattr(seqvae.cache, "REPORT_SECONDS", 0.2)
    started = time.monotonic()
    with entry_lock("toy", key_digest(KEY), "held by the test"):
        with pytest.raises(UserError) as error:
            cached("toy", KEY, lambda folder: pytest.fail("built while another process held the entry"))
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert f"another process (pid {os.getpid()} on" in message and "$SEQVAE_CACHE_WAIT" in message
    err = capsys.readouterr().err
    assert "waiting for another process" in err and "seqvae: still waiting for the toy data cache entry" in err
    assert not (cache_root() / "toy" / key_digest(KEY)).exists()


def test_leftovers_of_an_entry_being_prepared_are_kept_and_of_a_dead_one_removed():
    other = {**KEY, "source": "other"}
    parent = cache_root() / "toy"
    parent.mkdir(parents=True)
    # a pid that is ours: a pid check would call the work in progress alive or dead by chance;
    # the lock says whether anyone prepares that entry
    partial = parent / f".{key_digest(other)}.partial-{os.getpid()}-0000"
    partial.mkdir()
    with entry_lock("toy", key_digest(other), "being prepared"):
        cached("toy", KEY, lambda folder: {"n": 0})
        assert partial.is_dir()  # another preparation's work in progress
    cached("toy", {**KEY, "source": "third"}, lambda folder: {"n": 0})
    assert not partial.exists()  # nobody holds its lock any more: a leftover
