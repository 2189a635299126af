"""What ``seqvae components`` says about a registered class: a one-line description and its
options with their types, defaults and docs.

The description is the first line of the class's own docstring. A class without one (a
subclass of a built-in data set that changes one attribute, say) falls back to its module's
docstring, then to the docstring of the nearest component it inherits from, marked as
inherited, so that a listing never shows an empty description without saying why.

Option docs are the string literals written under each field of the ``Options`` dataclass
(the convention of the built-in plugins); they are read from the source, which Python does not
keep at run time.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, get_type_hints

import yaml

from seqvae.options import to_plain, type_name

NO_DESCRIPTION = "(no description: give the class a docstring)"


def first_line(doc: str | None) -> str:
    lines = inspect.cleandoc(doc or "").strip().splitlines()
    return " ".join(lines[0].split()) if lines else ""


def summary(cls: type) -> str:
    """One line describing a registered class (see the module docstring for the fallbacks)."""
    own = first_line(cls.__dict__.get("__doc__"))
    if own:
        return own
    module = sys.modules.get(cls.__module__)
    from_module = first_line(getattr(module, "__doc__", None))
    if from_module:
        return from_module
    for ancestor in cls.__mro__[1:]:
        if _is_slot_base(ancestor):
            break
        doc = first_line(ancestor.__dict__.get("__doc__"))
        if doc:
            named = ancestor.__dict__.get("name")
            return f"{doc} (inherited from {named or ancestor.__qualname__})"
    return NO_DESCRIPTION


def _is_slot_base(cls: type) -> bool:
    """The slot bases (and what they derive from) describe a slot, not a component."""
    from seqvae.registry import _bases

    return any(cls is base or issubclass(base, cls) for base in _bases().values())


@dataclass(frozen=True)
class OptionDoc:
    """One option of a component or data set."""

    name: str
    type: str
    default: str
    """As YAML writes it; ``required`` for an option without a default."""
    doc: str


def option_docs(options_cls: type) -> list[OptionDoc]:
    """The options of a dataclass, in declaration order."""
    if not dataclasses.is_dataclass(options_cls):
        return []
    hints = get_type_hints(options_cls)
    docs = _field_docstrings(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = _yaml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml_value(f.default_factory())
        else:
            default = "required"
        out.append(OptionDoc(f.name, type_name(hints.get(f.name, Any)), default, docs.get(f.name, "")))
    return out


def _yaml_value(value: Any) -> str:
    """A default as one line of YAML flow style (a schedule: ``{start: 1.0, end: null, ...}``)."""
    text = yaml.safe_dump(to_plain(value), default_flow_style=True, sort_keys=False)
    return " ".join(text.removesuffix("\n...\n").split())


def _field_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the source of ``cls`` and its dataclass bases; fields whose
    class has no source at hand (built in a notebook, say) get no doc."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):  # fmt: skip
                docs[stmt.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


__all__ = ["NO_DESCRIPTION", "OptionDoc", "first_line", "option_docs", "summary"]
