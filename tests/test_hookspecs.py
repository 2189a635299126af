"""Every hook spec has a test and is documented, and every slot contract is documented where
it is declared and in the tutorial (datasette's test_plugin_hooks_have_tests and
test_plugin_hooks_are_documented): a new hook or slot fails here until it has both."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from seqvae import hookspecs
from seqvae.data import Dataset
from seqvae.errors import UserError
from seqvae.registry import PluginError, build_registry
from seqvae.slots import SLOTS, NoOptions, Prior
from tests.fake_plugins import plugin_module

TUTORIAL = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if hasattr(fn, f"{hookspecs.PROJECT}_spec"))  # fmt: skip


def _section(heading: str) -> str:
    """The tutorial's text under a ``###`` heading, up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", TUTORIAL, re.MULTILINE | re.DOTALL)
    assert match, f"docs/writing-plugins.md has no section '### {heading}'"
    return match[1]


def test_there_are_hooks():
    assert HOOKS == ["seqvae_register"]


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    assert f"test_hook_{hook}" in globals(), f"add test_hook_{hook} to {__file__}"


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring in seqvae/hookspecs.py"
    assert _section(f"`{hook}`").strip()


class HookPrior(Prior):
    """A prior registered by the hook test."""

    name = "hook-prior"

    def forward(self, cond):
        zeros = cond.new_zeros(*cond.shape[:-1], 1)
        return zeros, zeros


class HookData(Dataset):
    """A data set registered by the hook test."""

    name = "hook-data"
    Options = NoOptions
    expected_files = "nothing"
    source_hint = "the test"

    def split(self, name):
        raise UserError("no splits")


def test_hook_seqvae_register():
    registry = build_registry(extra=[plugin_module("hook_plugin", HookPrior, HookData)])
    assert registry.get("prior", "hook-prior").provider == "hook_plugin"
    assert registry.get("dataset", "hook-data").cls is HookData
    assert registry.plugins["hook_plugin"].registers == [("prior", "hook-prior"), ("dataset", "hook-data")]
    # registered whole or not at all: a hook that raises registers nothing, and is named
    with pytest.raises(PluginError, match="plugin 'half_plugin' failed to load: RuntimeError: the hook broke"):
        build_registry(extra=[plugin_module("half_plugin", HookPrior, fail=True)])


@pytest.mark.parametrize("base", [*SLOTS.values(), Dataset], ids=lambda cls: cls.__name__)
def test_slot_contracts_are_documented_where_declared_and_in_the_tutorial(base):
    assert inspect.getdoc(base), f"{base.__qualname__} has no docstring"
    abstract = sorted(getattr(base, "__abstractmethods__", ()))
    assert abstract, f"{base.__qualname__} declares no abstract method"
    for method in abstract:
        assert inspect.getdoc(getattr(base, method)), f"{base.__qualname__}.{method} has no docstring"
    section = _section(f"{base.slot}: `{base.__module__}.{base.__qualname__}`")
    for method in abstract:
        assert f"`{method}(" in section, f"the tutorial's {base.slot} section omits {method}"
