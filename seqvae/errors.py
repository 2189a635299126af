"""Errors a user can act on.

Anything raised as :class:`UserError` is reported by the CLI as one line and exit status 2
(a bad config, bad data, bad arguments). Every other exception is an internal failure
(exit status 1).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: config, data, arguments or plugins."""


class ConfigError(UserError):
    """A composition or option that does not validate.

    ``path`` is the dotted YAML path (``model.prior.hidden``) and ``source`` the file or
    built-in composition it came from; the source may be filled in by whoever knows it.
    """

    def __init__(self, path: str, message: str, source: str | None = None) -> None:
        super().__init__(path, message, source)
        self.path = path
        self.message = message
        self.source = source

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"
