"""Fresh virtual environments for the tests that install packages as a user would: a venv
without pip (pip is run from this environment with ``--python``), seqvae installed into it
from this checkout, and the heavy dependencies (torch, numpy, pytest, ...) reached through a
``zz_deps.pth`` listing the folders they are installed in here, after the venv's own
site-packages, so that seqvae and any plugin come from what was installed into the venv."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCIES = ("torch", "numpy", "pluggy", "yaml", "torchmetrics", "tensorboard", "tqdm", "pytest", "setuptools")


def run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a shell that activated the venv: its bin first on PATH; one
        thread; the composed LSTM cell (compiling the native one takes 20 s once per source)."""
        # no plugins, data or Python paths of the test run leak in; its data cache does
        env = {k: v for k, v in os.environ.items()
               if k == "SEQVAE_CACHE" or not k.startswith(("SEQVAE_", "PYTHON", "VIRTUAL_ENV"))}  # fmt: skip
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(self.root),
                "OMP_NUM_THREADS": "1", "SEQVAE_NATIVE": "0", **extra}  # fmt: skip

    def pip_install(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``pip install`` into the venv, offline: no dependencies, no build isolation (the
        build backend, setuptools, comes from this environment)."""
        pip = [sys.executable, "-m", "pip", "--python", self.python, "install", "--quiet", "--no-deps",
               "--no-build-isolation", "--no-index"]  # fmt: skip
        return run(*pip, *args, cwd=cwd)


def dependency_pth() -> str:
    """A .pth file's lines: the folders this environment imports seqvae's dependencies from.
    Not simply this environment's purelib: that may itself reach them through a .pth file
    (a worktree's venv borrowing another's packages), which Python reads in site folders only."""
    places = dict.fromkeys(str(Path(importlib.import_module(name).__file__).resolve().parents[1])
                           for name in DEPENDENCIES)  # fmt: skip
    return "".join(f"{place}\n" for place in places)


def make_venv(folder: Path) -> Venv:
    """A venv at ``folder`` with seqvae installed from this checkout (editable)."""
    run(sys.executable, "-m", "venv", "--without-pip", folder)
    venv = Venv(folder)
    site = Path(run(venv.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "zz_deps.pth").write_text(dependency_pth())
    venv.pip_install("-e", ROOT)
    return venv
