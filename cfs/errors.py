"""The one error type a user can cause.

The CLI prints a :class:`CfsError` as a single line (``cfs: error: ...``) and exits with
code 2, without a traceback. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class CfsError(Exception):
    """A problem the user can fix: unknown name, missing data, bad config, incompatible pair."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean: a, b?)"`` for the closest valid names, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> CfsError:
    """Build the standard error for an unknown registered name, with suggestions."""
    choices = sorted(choices)
    hint = did_you_mean(name, choices)
    if not hint:
        hint = f" (valid: {', '.join(choices)})" if choices else ""
    return CfsError(f"unknown {kind} {name!r}{hint}")


def shown(value: object) -> str:
    """``value`` as it may appear in a one-line message: as is when printable, else its repr
    (a path holding a newline or another line separator must not split the error line)."""
    text = str(value)
    return text if text.isprintable() else repr(text)
