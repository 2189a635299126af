"""The engine knows slots, not models; every hook is documented and tested."""

import inspect
import re
from pathlib import Path

import pytest

from seqvae import hookspecs

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAMES = re.compile(r"z_?forcing|vrnn|srnn|storn|\bdkf\b|deep markov|dsae|stcn", re.IGNORECASE)


def test_no_model_names_in_the_engine():
    hits = []
    for path in sorted((ROOT / "seqvae").rglob("*")):
        if path.suffix in (".py", ".yaml", ".md", ".txt") and not path.is_symlink():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if MODEL_NAMES.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "model names inside seqvae/:\n" + "\n".join(hits)


def test_the_grep_would_catch_a_model_name(tmp_path):
    assert MODEL_NAMES.search('if model == "vrnn":')
    assert MODEL_NAMES.search("class ZForcingDecoder")
    assert not MODEL_NAMES.search("the decoder's storage")


HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("seqvae_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 15, f"hook {hook} needs a real docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def {hook}\(", tests), f"no test implements hook {hook}"
