"""Progress a person can read: tqdm bars for experiences, epochs (images/s and running loss),
evaluation and few-shot validation/testing, and one summary line per experience.

Off with ``--no-progress``; bars also switch themselves off when standard error is not a
terminal (tqdm's ``disable=None``), so logs and CI output stay clean.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm


class Progress:
    """Bars and notes of one run."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()

    def bar(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
            **kwargs: Any) -> Any:
        """A tqdm bar (a no-op one when progress is off)."""
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                    disable=None if self.enabled else True, **kwargs)

    def batches(self, total: int, desc: str) -> Any:
        """A bar counting training images (images/s); ``None`` when progress is off, so the
        training step pays nothing for it."""
        if not self.interactive:
            return None
        return self.bar(total=total, desc=desc, unit="img", unit_scale=True)

    def note(self, text: str) -> None:
        """A line between the bars (only in an interactive terminal)."""
        if self.interactive:
            tqdm.write(text, file=sys.stderr)
