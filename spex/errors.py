"""The error types of bad input, shared by every layer (the engine, the lenses, the spec, the CLI).

It lives outside ``spex.engine`` so that application code can name it without reaching into the math,
and the engine can raise it without importing anything above it.
"""

from __future__ import annotations


class SpexInputError(ValueError):
    """Bad input to the library: the message names the argument and the fix (one line).

    ``field`` optionally names the argument or spec field at fault (``"target"``, ``"chat"``, ...), so a
    caller that knows where the argument came from (the spec) can name its own field.
    """

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SpecError(SpexInputError):
    """A spec that cannot be run: the message names the spec field and the fix (one line)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
