"""docs/writing-plugins.md, run as a plugin author would follow it, so the tutorial cannot rot.

Every fenced block is used here (test_every_block_is_used_here keeps that list complete): each
file block is written where its first line says (``# seqvae_example/poe_prior.py``) and must be
the file of the same name in examples/seqvae-example-plugin, which it therefore builds
completely; the package they make is installed with pip into a fresh environment and every
command of the sh blocks runs there, in order. The only changes to what is shown:

- ``pip install`` is pip of this environment with ``--python`` the fresh venv's, offline
  (``--no-deps --no-build-isolation --no-index``);
- training budgets become ``--max-steps 3`` and ``bench`` gets ``--iwae-k 2``.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from seqvae import hookspecs
from tests.docblocks import FENCE, commands, tiny_budget, write_named_block
from tests.venvs import ROOT, run

TUTORIAL_PATH = ROOT / "docs" / "writing-plugins.md"
TUTORIAL = TUTORIAL_PATH.read_text()
EXAMPLE = ROOT / "examples" / "seqvae-example-plugin"
BLOCKS = [(m[1], m[2]) for m in FENCE.finditer(TUTORIAL)]
NAMED = re.compile(r"^# ([\w\-]+(?:/[\w\-]+)*\.(?:py|toml|yaml))\n")


def files() -> dict[str, str]:
    """The file blocks, by the path their first line names."""
    return {m[1]: text for _, text in BLOCKS if (m := NAMED.match(text))}


def shell() -> list[str]:
    return [text for lang, text in BLOCKS if lang == "sh"]


def example_files() -> list[str]:
    """The files of the example package, but its README, which points at the tutorial."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", EXAMPLE, cwd=ROOT).stdout.split()
    names = (str(Path(name).relative_to(EXAMPLE.relative_to(ROOT))) for name in listed)
    return sorted(name for name in names if name != "README.md")


def test_every_block_is_used_here():
    """A block added to the tutorial fails here until a test below uses it."""
    kinds = [(lang, "file" if NAMED.match(text) else "") for lang, text in BLOCKS]
    assert kinds == [
        ("text", ""),  # test_the_layout_lists_the_example_package
        ("python", ""),  # test_the_hook_block_is_the_spec
        ("python", "file"), ("python", "file"), ("python", "file"), ("toml", "file"), ("python", "file"),
        ("sh", ""), ("yaml", "file"), ("sh", ""), ("python", "file"), ("python", "file"), ("sh", ""), ("sh", ""),
    ]  # fmt: skip


def test_the_file_blocks_are_the_example_package_complete():
    shown = files()
    assert sorted(shown) == example_files()
    for name, text in shown.items():
        assert (EXAMPLE / name).read_text() == text, f"{name}: the tutorial and the example package differ"


def test_the_layout_lists_the_example_package():
    layout = next(text for lang, text in BLOCKS if lang == "text")
    listed = [line.split()[0] for line in layout.splitlines()[1:]]
    assert sorted(listed) == example_files()


def test_the_hook_block_is_the_spec():
    block = next(text for lang, text in BLOCKS if lang == "python" and not NAMED.match(text))
    scope: dict = {}
    exec(compile(block, f"{TUTORIAL_PATH} (hook)", "exec"), scope)
    assert list(inspect.signature(scope["seqvae_register"]).parameters) == list(
        inspect.signature(hookspecs.seqvae_register).parameters
    )


@pytest.mark.slow
def test_the_tutorial_builds_installs_and_runs(fresh_venv, tmp_path):
    venv, work = fresh_venv, tmp_path
    for text in files().values():
        write_named_block(text, work / "seqvae-example-plugin")
    outputs: dict[str, str] = {}
    for script in shell():
        for argv in commands(script):
            if argv[:2] == ["pip", "install"]:
                venv.pip_install(*argv[2:], cwd=work)
                continue
            argv = tiny_budget(argv, steps=3) + (["--iwae-k", "2"] if argv[:2] == ["seqvae", "bench"] else [])
            done = subprocess.run([str(venv.bin / argv[0]), *argv[1:]], cwd=work, env=venv.env(),
                                  capture_output=True, text=True)  # fmt: skip
            assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}\n{done.stderr}"
            outputs[" ".join(argv[:3])] = done.stdout

    # installed into the venv, not read from the folder the tutorial wrote
    probe = run(venv.python, "-c", "import seqvae_example; print(seqvae_example.__file__)", env=venv.env(), cwd=work)
    assert probe.stdout.startswith(str(venv.root))
    assert "seqvae-example-plugin:poe-prior" in outputs["seqvae plugins"]
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in outputs["seqvae components --slot"].splitlines()
            if line.startswith("  ") and not line.startswith("   ")}  # fmt: skip
    assert rows["poe"] == ["seqvae-example-plugin:poe-prior",
                           "Product of Gaussian experts of cond_t and N(0, I): precisions add, means are weighted."]
    assert "experts: int = 4" in outputs["seqvae components --slot"]
    assert "valid_fraction: float = 0.1" in outputs["seqvae components csv-sequences"]
    assert "seqvae-example-plugin:csv-sequences" in outputs["seqvae components csv-sequences"]
    assert "Real-valued sequences, one per CSV file" in outputs["seqvae components csv-sequences"]
    assert "valid composition" in outputs["seqvae config validate"]
    assert "component: poe" in outputs["seqvae config show"] and "batch_size: 8" in outputs["seqvae config show"]
    assert re.search(r"\b5 passed\b", outputs["python -m pytest"])
    assert "trained zforcing-poe for 3 steps" in outputs["seqvae train --model"]
    results = json.loads((work / "runs" / "bench-csv-sequences" / "results.json").read_text())
    assert [(r["model"], r["error"]) for r in results] == [("zforcing-poe", None), ("zforcing", None)]
