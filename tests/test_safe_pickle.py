"""Data pickles load plain data and numpy scalars/arrays; a pickle that would run code is refused."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest

from seqvae import safe_pickle
from seqvae.errors import UserError
from tests.datafiles import write_music_pickle


class Payload:
    """Unpickles as ``call(*args)``: what a malicious pickle does."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def evil_payloads(marker):
    """Pickles that would each create ``marker`` (or run something) when loaded naively."""
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Payload(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def test_plain_data_and_numpy_scalars_and_arrays_load(tmp_path):
    data = {
        "ints": [1, -2, 3 << 70], "floats": (1.5, float("inf")), "text": "é", "raw": b"\x00\xff",
        "nested": {"set": {1, 2}, "frozen": frozenset({3}), "complex": 1 + 2j, "none": None},
        "scalars": [np.int64(60), np.float32(0.5), np.bool_(True)],
        "array": np.arange(12, dtype=np.int16).reshape(3, 4),
    }  # fmt: skip
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = safe_pickle.load(path)
        array = loaded.pop("array")
        assert loaded == {k: v for k, v in data.items() if k != "array"}
        np.testing.assert_array_equal(array, data["array"])
        assert array.dtype == np.int16 and type(loaded["scalars"][0]) is np.int64


def test_a_python2_pickle_with_numpy_int64_scalars_loads(tmp_path):
    path = write_music_pickle(tmp_path / "music.pkl", {"train": [[(60, 64), ()]]})
    raw = path.read_bytes()
    assert b"numpy.core.multiarray\nscalar" in raw and b"_codecs" not in raw
    loaded = safe_pickle.load(path)
    assert loaded == {"train": [[(60, 64), ()]]} and type(loaded["train"][0][0][0]) is np.int64


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
def test_a_pickle_naming_any_other_global_is_refused_and_nothing_runs(tmp_path, name, protocol):
    marker = tmp_path / "marker"
    payload = evil_payloads(marker)[name]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": [payload]}, protocol=protocol))
    # os.system is posix.system; protocol 2 writes Python 2 names (__builtin__.exec)
    module = payload.call.__module__ if protocol > 2 else r"\w+"
    refused = rf"{module}\.{payload.call.__qualname__}"
    with pytest.raises(UserError, match=f"evil.pkl: refused to load this pickle: it names the global {refused}, "):
        safe_pickle.load(path)
    assert not marker.exists()


def test_the_payload_is_live_when_loaded_without_the_guard(tmp_path):
    """The refused pickles above are real attacks: a plain pickle.load runs them."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(evil_payloads(marker)["builtins.exec"]))
    assert marker.exists()


def test_codecs_encode_only_gives_latin1_bytes(tmp_path):
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1"); nothing else passes
    assert safe_pickle.loads(pickle.dumps(b"\x00\xff", protocol=2)) == b"\x00\xff"
    path = tmp_path / "codec.pkl"
    path.write_bytes(pickle.dumps(Payload(__import__("_codecs").encode, "eJzLSM3JyQcABiwCFQ==", "base64"), protocol=2))
    with pytest.raises(UserError, match="codec.pkl: not a readable pickle .*encoding 'base64' is not allowed"):
        safe_pickle.load(path)


def test_a_truncated_or_missing_pickle_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"train": list(range(100))}, protocol=2)[:-20])
    with pytest.raises(UserError, match="cut.pkl: not a readable pickle"):
        safe_pickle.load(path)
    with pytest.raises(UserError, match="gone.pkl: cannot read this music pickle"):
        safe_pickle.load(tmp_path / "gone.pkl", "music pickle")
