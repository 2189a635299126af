"""Native CPU kernels (``seqvae/csrc``), compiled on first use and cached per machine.

Only the pointwise LSTM cell is native: inside a stochastic RNN's step loop its ten eager
kernels forward and fifteen autograd nodes backward cost about 7 % of a small model's
training step (``benchmarks/README.md``), and no PyTorch op fuses them on CPU.

The library is built with the system C++ compiler against the installed torch's headers,
once per source, torch version and CPU capability, into ``$SEQVAE_NATIVE_DIR`` (default: the
user's cache folder, ``~/.cache/seqvae-native``, or the temporary folder where that cannot be
made). It is written under a temporary name and renamed into place, so a killed or
concurrent build never leaves a half-written library.
Where no compiler is found, the build fails, the CPU has neither AVX2 nor AVX-512, or
``SEQVAE_NATIVE=0``, :func:`lstm_cell_op` returns None (with one warning for a failed build)
and callers use the composed PyTorch cell, which computes the same function.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

NATIVE_ENV = "SEQVAE_NATIVE"
DIR_ENV = "SEQVAE_NATIVE_DIR"
SOURCE = Path(__file__).with_name("csrc") / "lstm_cell.cpp"

CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
}
"""What ATen's vector headers need to compile to the instructions that this machine's ATen
itself dispatches to (``torch.backends.cpu.get_cpu_capability()``)."""

_UNSET = object()
_op: Callable | None | object = _UNSET


def enabled() -> bool:
    return os.environ.get(NATIVE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def lstm_cell_op() -> Callable | None:
    """``torch.ops.seqvae.lstm_cell(gates, c) -> (h, c_new)``, or None where it cannot be had.

    Built and loaded once per process; later calls return the same op (or None) at once."""
    global _op
    if _op is _UNSET:
        _op = _load() if enabled() else None
    return _op


def native_dir() -> Path:
    """``$SEQVAE_NATIVE_DIR``, else ``~/.cache/seqvae-native``; where that folder cannot be
    made (a read-only home), a per-user folder in the system's temporary folder."""
    if os.environ.get(DIR_ENV):
        preferred = Path(os.environ[DIR_ENV]).expanduser()
    else:  # not $SEQVAE_CACHE: that holds data sets, and tests point it at a fresh folder each
        preferred = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seqvae-native"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred
    except OSError:
        return Path(tempfile.gettempdir()) / f"seqvae-native-{getattr(os, 'getuid', lambda: 0)()}"


def build_command(output: Path) -> list[str]:
    """The compiler call that builds the library at ``output`` (raises KeyError on a CPU
    without AVX2 or AVX-512, where ATen's vectors would fall back to scalar code)."""
    from torch.utils import cpp_extension

    capability = CAPABILITY_FLAGS[torch.backends.cpu.get_cpu_capability()]
    compiler = os.environ.get("CXX") or shutil.which("c++") or "g++"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [flag for path in cpp_extension.include_paths() for flag in ("-isystem", path)]
    libs = [flag for path in cpp_extension.library_paths() for flag in (f"-L{path}", f"-Wl,-rpath,{path}")]
    return [
        compiler, "-shared", "-fPIC", "-std=c++20", "-O3", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *capability,
        *includes, str(SOURCE), "-o", str(output), *libs, "-lc10", "-ltorch_cpu", "-ltorch",
    ]  # fmt: skip


def library_path() -> Path:
    """Where the library for this source, torch and CPU capability lives (built or not)."""
    command = build_command(Path("out.so"))
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join([torch.__version__, *command]).encode()).hexdigest()[:16]
    return native_dir() / f"seqvae_native-{key}.so"


def _load() -> Callable | None:
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    if sys.platform != "linux" or capability not in CAPABILITY_FLAGS:
        return None  # the build command is written for gcc/clang on Linux x86-64
    try:
        path = library_path()
        if not path.exists():
            _build(path)
        torch.ops.load_library(str(path))
        return torch.ops.seqvae.lstm_cell
    except Exception as error:  # any failure leaves the composed cell in charge
        warnings.warn(
            f"seqvae: the native LSTM cell ({SOURCE}) could not be built or loaded, so the composed "
            f"PyTorch cell is used (same results, slower on CPU); set {NATIVE_ENV}=0 to skip the "
            f"attempt. {type(error).__name__}: {error}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.partial.so")
    print(f"seqvae: compiling the native LSTM cell into {path.parent} (once, about 20 s)", file=sys.stderr)
    try:
        done = subprocess.run(build_command(partial), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the compiler exited with {done.returncode}:\n{done.stderr[-2000:]}")
        os.replace(partial, path)  # atomic: readers see no library or a whole one
    finally:
        partial.unlink(missing_ok=True)
