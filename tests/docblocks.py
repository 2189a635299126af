"""Reading the fenced blocks of a Markdown page as a reader would copy them: the commands of a
sh block, and file blocks written where their first line says (README.md and
docs/writing-plugins.md are both run this way)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BUDGETS = ("--max-steps", "--epochs", "--time-budget")


def commands(script: str) -> list[list[str]]:
    """The commands of a sh block: continued lines joined, comments dropped."""
    lines = script.replace("\\\n", " ").splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


def tiny_budget(argv: list[str], steps: int = 2) -> list[str]:
    """``argv`` with its training budget cut to ``steps`` (the three budget flags are one
    mutually exclusive choice, so each becomes --max-steps STEPS)."""
    out, args = [], iter(argv)
    for arg in args:
        if arg in BUDGETS:
            next(args)  # the flag's value
            out += ["--max-steps", str(steps)]
        else:
            out.append(arg)
    return out


def write_named_block(text: str, folder: Path) -> Path:
    """A block whose first line names its file (``# small-zforcing.yaml``), written there."""
    path = folder / text.splitlines()[0].removeprefix("# ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
