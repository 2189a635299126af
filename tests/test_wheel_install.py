"""A non-editable install: the wheel carries registry.yaml and the built-in plugins."""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_and_builds_zforcing(tmp_path):
    # build from a copy of the tracked sources, as from a clean clone
    src = tmp_path / "src"
    files = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).split()
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to((ROOT / name).readlink())
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src))
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
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

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
