"""The data cache: built once, keyed by source and protocol, never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seqvae.cache import cache_root, cached

KEY = {"dataset": "toy", "protocol": 1, "source": "abc"}


def build_counting(calls: list):
    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "a.bin").write_bytes(b"x" * 10)
        return {"n": 10}

    return build


def test_cache_root_follows_seqvae_cache(_data_cache, monkeypatch):
    assert cache_root() == _data_cache
    monkeypatch.delenv("SEQVAE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    if sys.platform.startswith("linux"):
        assert cache_root() == Path("/somewhere/seqvae")


def test_entry_is_built_once_and_rebuilt_for_a_new_key():
    calls: list = []
    folder, info = cached("toy", KEY, build_counting(calls))
    again, info_again = cached("toy", KEY, build_counting(calls))
    assert (folder, info) == (again, info_again) == (folder, {"n": 10}) and len(calls) == 1
    assert (folder / "a.bin").read_bytes() == b"x" * 10
    other, _ = cached("toy", {**KEY, "protocol": 2}, build_counting(calls))
    assert other != folder and len(calls) == 2


def test_a_failed_build_leaves_nothing_behind():
    def broken(folder: Path) -> dict:
        (folder / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("toy", KEY, broken)
    assert list((cache_root() / "toy").iterdir()) == []


def test_an_entry_without_its_completion_marker_is_rebuilt():
    calls: list = []
    folder, _ = cached("toy", KEY, build_counting(calls))
    (folder / "meta.json").unlink()  # as if copied half-way, or written by hand
    again, _ = cached("toy", KEY, build_counting(calls))
    assert again == folder and len(calls) == 2 and (folder / "meta.json").is_file()


def test_a_killed_preparation_is_never_used_and_is_cleaned_up(_data_cache):
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from seqvae.cache import cached

        def slow(folder):
            (folder / "a.bin").write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
            return {"n": 1}

        cached("toy", {"dataset": "toy", "protocol": 1, "source": "abc"}, slow)
        """
    )
    env = {**os.environ, "SEQVAE_CACHE": str(_data_cache)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    partials = list((_data_cache / "toy").glob(".*.partial-*"))
    assert len(partials) == 1 and (partials[0] / "a.bin").read_bytes() == b"half"
    calls: list = []
    start = time.perf_counter()
    folder, info = cached("toy", KEY, build_counting(calls))
    assert len(calls) == 1 and info == {"n": 10} and (folder / "a.bin").read_bytes() == b"x" * 10
    assert not partials[0].exists() and time.perf_counter() - start < 5
