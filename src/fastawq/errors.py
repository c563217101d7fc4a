"""User-facing errors.

Every mistake a user can make (bad path, bad option, unusable data) is raised as a
:class:`FastAWQError`: one message that names the problem and one hint that names the fix.
The CLI prints these without a traceback; library users can catch them.
"""

from __future__ import annotations


class FastAWQError(Exception):
    """A problem with the user's input or environment, with a suggested fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message
