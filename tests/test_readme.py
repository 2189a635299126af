"""README.md's examples, run as a new user would copy them, so the README cannot drift from the
code. Every fenced block is run by one of the tests below (test_every_block_is_run_here keeps
that list complete); the only changes to what is shown:

- training budgets (--max-steps, --epochs, --time-budget; the demo's in registry.yaml) become
  --max-steps 2;
- data comes from miniature corpora written where the commands look for data (./data/<dataset>
  in the folder they run in): a few seconds of TIMIT-like audio, five of music21's chorales;
  a composition file the README shows without a command trains on a small npz through --data;
- `seqvae bench` runs on TIMIT get --set options for the widths both of its models have;
- `make test` is not run (it is this suite), nor does benchmarks/reproduce.py train (that takes
  hours): it writes its report of no runs yet, to a temporary folder (--report-only --docs).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import seqvae.demo as demo_cli
from benchmarks import reproduce
from seqvae.cli import main
from seqvae.composition import load_composition, registry_section
from tests.datafiles import write_ldc_tree
from tests.docblocks import FENCE, commands, tiny_budget, write_named_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks() -> dict[str, list[tuple[str, str]]]:
    """(language, text) of each fenced block, by `## ` section ("" before the first one)."""
    parts = re.split(r"^## (.+)\n", README, flags=re.MULTILINE)
    sections = {"": parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}
    return {title: [(m[1], m[2]) for m in FENCE.finditer(body)] for title, body in sections.items()}


BLOCKS = _blocks()


def block(section: str, language: str, index: int = 0) -> str:
    return [text for lang, text in BLOCKS[section] if lang == language][index]


def test_every_block_is_run_here():
    """A block added to the README fails here until a test below runs it."""
    languages = {title: [lang for lang, _ in blocks] for title, blocks in BLOCKS.items() if blocks}
    assert languages == {
        "": ["sh", "text"],  # test_make_demo_prints_what_the_quick_start_shows
        "Command line": ["sh"],  # test_command_line_examples
        "Threads, parallel runs and data-parallel training": ["sh"],  # test_scale_out_examples
        "Reproducing the papers": ["sh"],  # test_reproduce_command_writes_its_report
        "Compositions": ["yaml", "sh", "yaml"],  # test_small_composition_*, test_complete_zforcing_*
    }


def run_seqvae(argv: list[str], capsys) -> str:
    assert argv[0] == "seqvae"
    status = main(argv[1:])
    captured = capsys.readouterr()
    assert status == 0, f"{shlex.join(argv)}\n{captured.err}"
    return captured.out


@pytest.fixture
def timit_here(tmp_path, monkeypatch) -> Path:
    """A folder with a miniature TIMIT at ./data/timit, where `--dataset timit` looks, as cwd."""
    write_ldc_tree(tmp_path / "data" / "timit", train=(1, 2, 5), test=(1, 1, 2))
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------------------- quick start


def _make_recipe(target: str) -> list[str]:
    """The last command `make TARGET` runs, with the venv's python called `python`."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n prints the recipe without running it; outside any make that runs this suite (make test)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "--no-print-directory", target, "PY=python"], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    return shlex.split(dry.stdout.strip().splitlines()[-1])


def skeleton(line: str) -> str:
    """A line of output with its measurements (numbers, data fingerprints) blanked out."""
    line = re.sub(r"\b[0-9a-f]{12}\b", "<data>", line)
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", line)


@pytest.mark.slow
def test_make_demo_prints_what_the_quick_start_shows(tmp_path, monkeypatch, capsys):
    assert commands(block("", "sh")) == [["make", "demo"], ["make", "test"]]
    # make test runs this suite: only its recipe is checked here
    assert _make_recipe("test") == ["python", "-m", "pytest", "-q"]
    demo = _make_recipe("demo")
    assert demo[:3] == ["python", "-m", "seqvae.demo"]

    # the quick start names the bench the demo runs
    section = registry_section("demo")
    bench = ["bench", "--models", ",".join(section["models"]), "--dataset", section["dataset"],
             *map(str, section["args"])]  # fmt: skip
    assert f"`seqvae {' '.join(bench)}`" in " ".join(README.split())
    # five of the chorales music21 bundles, where `--dataset chorales` looks first
    pytest.importorskip("music21")
    from seqvae_plugins.chorales_dataset import music21_bach_folder

    (tmp_path / "data" / "chorales").mkdir(parents=True)
    for name in ["bwv1.6.mxl", "bwv10.7.mxl", "bwv101.7.mxl", "bwv102.7.mxl", "bwv103.6.mxl"]:
        shutil.copy(music21_bach_folder() / name, tmp_path / "data" / "chorales" / name)
    monkeypatch.chdir(tmp_path)
    tiny = {**section, "args": tiny_budget(section["args"])}
    monkeypatch.setattr(demo_cli, "registry_section", lambda key: tiny if key == "demo" else registry_section(key))
    assert demo_cli.main(demo[3:]) == 0
    printed = capsys.readouterr().out.splitlines()

    shown = [line for line in block("", "text").splitlines() if line.strip() and line != "..."]
    actual = [skeleton(line) for line in printed]
    for line in shown:  # each line shown appears, in the order shown, up to the measurements
        assert skeleton(line) in actual, f"{line!r} is not printed:\n" + "\n".join(printed)
        actual = actual[actual.index(skeleton(line)) + 1 :]
    # and what it says to open next is there
    assert "tensorboard --logdir runs/demo/tensorboard" in printed
    assert "`runs/demo/results.md`" in README and (tmp_path / "runs" / "demo" / "results.md").is_file()
    for model in section["models"]:
        assert (tmp_path / "runs" / "demo" / "runs" / f"{model}-chorales-seed0" / "config.yaml").is_file()


# ---------------------------------------------------------------------------- command line

# Options of `seqvae bench`'s --set apply to every model, so these are widths that both
# zforcing and vrnn have; without them the six runs take half a minute instead of seconds.
SMALL_BENCH = ["model.latent_dim=4", "model.decoder.hidden=8", "model.encoder.hidden=8", "model.prior.hidden=8"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*the full TIMIT corpus has")
def test_command_line_examples(timit_here, capsys):
    outputs = {}
    for argv in commands(block("Command line", "sh")):
        argv = tiny_budget(argv)
        if argv[1] == "bench":
            argv += [arg for item in SMALL_BENCH for arg in ("--set", item)]
        outputs[argv[1]] = outputs.get(argv[1], "") + run_seqvae(argv, capsys)
    assert outputs["models"].split()[0] == "zforcing"
    assert "latent-lstm" in outputs["components"] and "hidden: int = 512" in outputs["components"]
    # config show applied timit's preset (zforcing's own eval_every is 500)
    assert yaml.safe_load(outputs["config"])["train"]["eval_every"] == 1000
    rows = json.loads((timit_here / "runs" / "bench-timit" / "results.json").read_text())
    runs = [(m, s, None) for m in ("zforcing", "vrnn") for s in (0, 1, 2)]
    assert [(r["model"], r["seed"], r["error"]) for r in rows] == runs
    config = yaml.safe_load((timit_here / "runs" / "zf" / "config.yaml").read_text())
    assert config["model"]["decoder"]["hidden"] == 256 and config["model"]["aux"]["reconstruction"]["z_force"] is True
    assert json.loads(outputs["eval"])["iwae_k"] == 64
    assert np.load(timit_here / "samples.npz")["x"].shape == (8, 100, 200)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*the full TIMIT corpus has")
def test_scale_out_examples(timit_here, capsys):
    small = [arg for item in SMALL_BENCH for arg in ("--set", item)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    for argv in commands(block("Threads, parallel runs and data-parallel training", "sh")):
        argv = tiny_budget(argv) + small
        if argv[0] == "seqvae":
            run_seqvae(argv, capsys)
        else:  # torchrun, as the module it is, from this environment
            assert argv[0] == "torchrun"
            done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:]], env=env,
                                  capture_output=True, text=True, timeout=300)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
    runs = timit_here / "runs"
    assert (runs / "zf-2threads" / "checkpoints" / "last.pt").is_file()
    rows = json.loads((runs / "bench-jobs" / "results.json").read_text())
    assert [(r["model"], r["seed"], r["error"]) for r in rows] == [(m, s, None) for m in ("zforcing", "vrnn")
                                                                   for s in (0, 1)]  # fmt: skip
    log = (runs / "zf-ddp" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log][-1] == 2  # rank 0 alone wrote it


# ---------------------------------------------------------------------------- reproducing


def test_reproduce_command_writes_its_report(tmp_path):
    (argv,) = commands(block("Reproducing the papers", "sh"))
    assert argv[:2] == ["python", "benchmarks/reproduce.py"]
    # as shown it trains for hours: here it only writes its report, of no runs yet, to tmp_path
    extra = ["--report-only", "--out", str(tmp_path / "no-runs-yet"), "--docs", str(tmp_path / "docs")]
    done = subprocess.run([sys.executable, *argv[1:], *extra], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "docs" / "reproduction.md").is_file() and (tmp_path / "docs" / "reproduction.json").is_file()
    # the models the README says it trains are the script's
    *others, last = reproduce.MODELS
    assert f"trains {', '.join(others)} and {last} with `--preset paper`" in " ".join(README.split())


# ---------------------------------------------------------------------------- compositions


def unwritten(written, resolved, path: str = "") -> list[str]:
    """Keys of ``resolved`` that ``written`` leaves to a default. A number where a mapping was
    resolved is a weight schedule given as a constant, which spells it out."""
    if not (isinstance(written, dict) and isinstance(resolved, dict)):
        return []
    missing = []
    for key, value in resolved.items():
        missing += [path + key] if key not in written else unwritten(written[key], value, f"{path}{key}.")
    return missing


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*the full TIMIT corpus has")
def test_small_composition_file_trains_as_shown(timit_here, capsys):
    write_named_block(block("Compositions", "yaml", 0), timit_here)
    (argv,) = commands(block("Compositions", "sh"))
    run_seqvae(tiny_budget(argv), capsys)
    model = yaml.safe_load((timit_here / "runs" / "small" / "config.yaml").read_text())["model"]
    # small for real: no width keeps the 512 to 1024 of its base
    widths = [v for spec in model.values() if isinstance(spec, dict) for v in spec.values() if type(v) is int]
    widths += [v for aux in model["aux"].values() for v in aux.values() if type(v) is int]
    assert max(widths) == 128 and model["latent_dim"] == 32
    assert model["aux"]["reconstruction"]["z_force"] is True


@pytest.mark.slow
def test_complete_zforcing_file_is_the_builtin_with_every_option(tmp_path, toy_npz, capsys):
    path = write_named_block(block("Compositions", "yaml", 1), tmp_path)
    resolved = load_composition(str(path)).to_dict()
    assert resolved == {**load_composition("zforcing").to_dict(), "description": resolved["description"]}
    assert unwritten(yaml.safe_load(path.read_text()), resolved) == []
    # it trains as a --model file (npz has no preset), and train writes it back as it is
    out = tmp_path / "run"
    run_seqvae(["seqvae", "train", "--model", str(path), "--dataset", "npz", "--data", str(toy_npz),
            "--max-steps", "2", "--out", str(out)], capsys)  # fmt: skip
    assert yaml.safe_load((out / "config.yaml").read_text()) == resolved
