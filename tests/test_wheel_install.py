"""A non-editable install: the wheel carries registry.yaml and the built-in plugins."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.venvs import dependency_pth

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd, **kwargs):
    return _run_both(*cmd, **kwargs)[0]


def _run_both(*cmd, **kwargs) -> tuple[str, str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout, result.stderr


def _clean_clone(tmp_path: Path) -> Path:
    """A copy of the tracked sources (symlinks kept as symlinks), as from a clean clone."""
    src = tmp_path / "src"
    files = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).split()
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to((ROOT / name).readlink())
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    return src


def _backend_warnings(pip_stderr: str) -> list[str]:
    """The summaries of the warnings pip relays from the build backend (setuptools), e.g.
    "Package 'seqvae.csrc' is absent from the `packages` configuration."."""
    return [line.split("BuildBackendWarning:", 1)[1].strip() for line in pip_stderr.splitlines()
            if "BuildBackendWarning:" in line]  # fmt: skip


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_and_builds_zforcing(tmp_path):
    src = _clean_clone(tmp_path)
    dist = tmp_path / "dist"
    pip_wheel = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")
    _, err = _run_both(*pip_wheel, "-w", str(dist), str(src))
    assert _backend_warnings(err) == [], err  # every folder that ships files is declared
    (wheel,) = dist.glob("seqvae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"seqvae", "seqvae_plugins", wheel.name.split("-py")[0] + ".dist-info"}
    assert "seqvae/registry.yaml" in names and "seqvae_plugins/latent_lstm.py" in names
    assert "seqvae/csrc/lstm_cell.cpp" in names  # seqvae.native compiles it on the user's machine
    registry_text = zipfile.ZipFile(wheel).read("seqvae/registry.yaml").decode()
    assert registry_text == (ROOT / "registry.yaml").read_text()

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel))
    # the heavy dependencies (torch, ...) come from this environment, appended after the
    # fresh site-packages, so seqvae itself can only be imported from the wheel
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_deps.pth").write_text(dependency_pth())

    out = _run(str(venv / "bin" / "seqvae"), "models", cwd=tmp_path)
    assert out.split()[0] == "zforcing"
    probe = (
        "import seqvae, seqvae_plugins\n"
        "from seqvae.composition import load_composition, build_model\n"
        "m = build_model(load_composition('zforcing'), x_dim=200)\n"
        "print(seqvae.__file__); print(seqvae_plugins.__file__)\n"
        "print(type(m.decoder).__module__, sum(p.numel() for p in m.parameters()))\n"
        "from seqvae import native; print(native.SOURCE.is_file())\n"
    )
    lines = _run(str(python), "-c", probe, cwd=tmp_path).splitlines()
    assert lines[0].startswith(str(site)) and lines[1].startswith(str(site))
    module, params = lines[2].split()
    assert module == "seqvae_plugins.latent_lstm" and int(params) > 10_000_000
    assert lines[3] == "True"  # the kernel source, where seqvae.native looks for it


@pytest.mark.slow
def test_editable_install_as_the_makefile_does_it(tmp_path):
    src = _clean_clone(tmp_path)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    # the dependencies (torch, ..., and setuptools, which builds in that venv) come from this
    # environment, appended after the fresh site-packages as in the wheel test
    site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_deps.pth").write_text(dependency_pth())
    pip_install = (sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                   "--no-build-isolation")  # fmt: skip
    _, err = _run_both(*pip_install, "-e", str(src))
    # "Editable installation." is the note setuptools gives on every editable install it serves
    # through an import hook (any layout but one src folder; here plugins/ becomes seqvae_plugins,
    # which a plain path entry could not do); nothing about what the project declares
    assert _backend_warnings(err) in ([], ["Editable installation."]), err
    probe = (
        "import seqvae, seqvae_plugins\n"
        "from seqvae import native; from seqvae.composition import registry_file\n"
        "print(seqvae.__file__); print(seqvae_plugins.__file__)\n"
        "print(registry_file().resolve()); print(native.SOURCE.resolve())\n"
    )
    lines = _run(str(python), "-c", probe, cwd=tmp_path).splitlines()
    # edits in the clone take effect: every file is imported or read from the clone itself
    expected = [src / "seqvae" / "__init__.py", src / "plugins" / "__init__.py", src / "registry.yaml",
                src / "seqvae" / "csrc" / "lstm_cell.cpp"]  # fmt: skip
    assert [Path(line).resolve() for line in lines] == [path.resolve() for path in expected]
