"""Typed option parsing: YAML mappings into dataclasses, with errors that name the YAML path.

Component options, objective settings and training settings are plain dataclasses with
defaults; :func:`parse` checks every key and type against the annotations, so a typo or a
wrong type stops the run before any work with a message such as
``model.prior.hidden: expected int, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from seqvae.errors import ConfigError

T = TypeVar("T")


def parse(cls: type[T], data: Any, path: str, source: str | None = None) -> T:
    """Build the dataclass ``cls`` from a mapping, validating keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of options, got {_show(data)}", source)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
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
    instance = cls(**kwargs)
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
        raise ConfigError(path, f"expected {_name(tp)}, got {_show(value)}", source)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(path, f"expected one of {', '.join(map(repr, choices))}, got {_show(value)}", source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_show(value)}", source)
        _, value_tp = get_args(tp)
        return {str(k): _check(value_tp, v, f"{path}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_show(value)}", source)
        (item_tp,) = get_args(tp)
        return [_check(item_tp, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        coerce = getattr(tp, "from_scalar", None)
        if coerce is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return coerce(float(value))
        return parse(tp, value, path, source)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported option type {tp!r} at {path}")
    raise ConfigError(path, f"expected {_name(tp)}, got {_show(value)}", source)


def _name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_name(a) for a in get_args(tp))
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return repr(value)


def to_plain(obj: Any) -> Any:
    """Dataclasses into plain dicts (for config.yaml and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


__all__ = ["parse", "to_plain"]
