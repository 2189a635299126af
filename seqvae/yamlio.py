"""YAML in and out: safe loading only, with one-line errors that name the file.

Only :class:`yaml.SafeLoader` (plain mappings, lists, scalars) is ever used: a tag such as
``!!python/object`` is an error, never an object. A document is also refused when, with its
aliases expanded, it is larger or deeper than any composition could need: a few lines of
aliases can stand for billions of values (or for themselves), which would hang or crash
whatever walks the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from seqvae.errors import UserError

MAX_VALUES = 100_000
"""Values (mapping keys and values, list items) a document may hold, aliases expanded."""
MAX_DEPTH = 64
"""Nesting of mappings and lists a document may have."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise UserError(f"{path}: not a YAML file (not UTF-8 text: byte {error.start} is {byte:#04x})") from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "<string>") -> Any:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise UserError(f"{source}: not valid YAML: {_describe(error)}") from None
    # the constructors of timestamps, numbers and binary raise these for malformed values
    # (`2001-13-45`, `!!int x`), and the parser recurses once per nesting level
    except (ValueError, TypeError, OverflowError) as error:
        raise UserError(f"{source}: not valid YAML: {type(error).__name__}: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise UserError(f"{source}: not valid YAML: nested too deeply for the parser") from None
    _check_size(data, source)
    return data


def _describe(error: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own text spans several
    lines, with a copy of the offending line)."""
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [error.context, error.problem]
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        text = "; ".join(" ".join(str(p).split()) for p in parts if p)
        return f"{text or type(error).__name__}{where}"
    return " ".join(str(error).split()) or type(error).__name__


def _check_size(data: Any, source: str) -> None:
    """Refuse a document too large or deep once its aliases are expanded (it may be recursive)."""
    count = 0
    stack = [(data, 0)]  # iterative: a recursive walk is what a deep document breaks
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{source}: nested too deeply for a composition (more than {MAX_DEPTH} levels)")
        if isinstance(node, dict):
            children = [item for pair in node.items() for item in pair]
        elif isinstance(node, (list, tuple, set)):
            children = list(node)
        else:
            continue
        count += len(children)
        if count > MAX_VALUES:
            raise UserError(
                f"{source}: too large for a composition (more than {MAX_VALUES} values with its "
                "aliases expanded; is an alias recursive?)"
            )
        stack.extend((child, depth + 1) for child in children)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
