"""Typed option parsing: YAML mappings into dataclasses, with errors that name the YAML path.

Component options, objective settings and training settings are plain dataclasses with
defaults; :func:`parse` checks every key and type against the annotations, so a typo or a
wrong type stops the run before any work with a message such as
``model.prior.hidden: expected int, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from seqvae.errors import ConfigError

T = TypeVar("T")


def parse(cls: type[T], data: Any, path: str, source: str | None = None) -> T:
    """Build the dataclass ``cls`` from a mapping, validating keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of options, got {show_value(data)}", source)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{show_key(key)}" if path else show_key(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(fields) or "none"
            raise ConfigError(key_path, f"unknown option{hint} (options: {known})", source)
        kwargs[key] = _check(hints[key], value, key_path, source)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    if missing:
        raise ConfigError(f"{path}.{missing[0]}" if path else missing[0], "required option missing", source)
    return _validated(cls(**kwargs), path, source)


def _validated(instance: T, path: str, source: str | None) -> T:
    check = getattr(instance, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise ConfigError(path, problem, source)
    return instance


def _check(tp: Any, value: Any, path: str, source: str | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _check(option, value, path, source)
            except ConfigError:
                continue
        raise ConfigError(path, f"expected {type_name(tp)}, got {show_value(value)}", source)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(path, f"expected one of {', '.join(map(repr, choices))}, got {show_value(value)}", source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {show_value(value)}", source)
        _, value_tp = get_args(tp)
        return {str(k): _check(value_tp, v, f"{path}.{show_key(k)}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {show_value(value)}", source)
        (item_tp,) = get_args(tp)
        return [_check(item_tp, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        coerce = getattr(tp, "from_scalar", None)
        if coerce is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            # a scalar is validated like the mapping it stands for (`kl_weight: .nan` is no weight)
            return _validated(coerce(_finite(value, path, source)), path, source)
        return parse(tp, value, path, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(value, path, source)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported option type {tp!r} at {path}")
    raise ConfigError(path, f"expected {type_name(tp)}, got {show_value(value)}", source)


def _finite(value: int | float, path: str, source: str | None) -> float:
    """A float option's value; NaN and infinities are never a setting (YAML writes them
    ``.nan`` and ``.inf``), and an int too large for a float is refused the same way."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(path, f"expected a finite number, got {show_value(value)}", source)
    return number


def type_name(tp: Any) -> str:
    """A type annotation as messages and ``seqvae components`` show it: ``int``, ``float or None``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    return str(tp).replace("typing.", "")


def show_value(value: Any) -> str:
    """A value in a message: its repr on one line, shortened; containers by their type."""
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


_PLAIN_KEY = re.compile(r"[\w\-]{1,80}")


def show_key(key: Any) -> str:
    """A mapping key as it appears in a dotted YAML path: plain names as they are, anything
    else quoted (so that a message stays one readable line whatever a file holds)."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return show_value(key)


def options_class_problem(options: Any) -> str | None:
    """Why ``options`` cannot be a component's ``Options`` (a dataclass whose fields all have
    types :func:`parse` reads), or None. Checked when a plugin registers the component, so
    that a bad class is the plugin's error and not a crash when a composition names it."""
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        return f"expected a dataclass, got {options!r}"
    return _class_problem(options, set())


def _class_problem(cls: type, seen: set[type]) -> str | None:
    seen.add(cls)
    try:
        hints = get_type_hints(cls)
    except Exception as error:  # noqa: BLE001 -- a forward reference that does not resolve, ...
        return f"cannot read its type annotations ({type(error).__name__}: {error})"
    for f in dataclasses.fields(cls):
        if f.init and not _supported(hints.get(f.name, Any), seen):
            return (f"option {f.name!r} has type {type_name(hints.get(f.name))}, which options cannot hold (use "
                    "bool, int, float, str, Literal, lists, dicts with str keys, unions or dataclasses)")  # fmt: skip
    return None


def _supported(tp: Any, seen: set[type]) -> bool:
    origin = get_origin(tp)
    if tp is Any or tp in (bool, int, float, str, type(None)):
        return True
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType):
        return all(_supported(option, seen) for option in get_args(tp))
    if origin is list:
        return len(get_args(tp)) == 1 and _supported(get_args(tp)[0], seen)
    if origin is dict:
        args = get_args(tp)
        return len(args) == 2 and args[0] is str and _supported(args[1], seen)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp in seen or _class_problem(tp, seen) is None
    return False


def to_plain(obj: Any) -> Any:
    """Dataclasses into plain dicts (for config.yaml and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


__all__ = ["options_class_problem", "parse", "show_key", "show_value", "to_plain", "type_name"]
