"""YAML in and out: safe loading only, with errors that name the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from seqvae.errors import UserError


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
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from error
    return loads(text, source=str(path))


def loads(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise UserError(f"{source}: not valid YAML: {error}") from error


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
