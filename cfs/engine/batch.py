"""A training batch that knows where each of its rows came from.

The continual loop draws ``n_drawn`` rows of ``state.train_data`` (their indices in
``index``); a strategy may then append rows it replays from a memory with
:meth:`Batch.append_replayed` (with extra per-row targets, such as DER's stored logits).
Rows of ``train_data`` joined from a memory (``state.join_train_data``) are replayed rows too,
although they were drawn. So every row is either

* **incoming**: a sample of the current experience's own training data, or
* **replayed**: a sample of an earlier experience, from a memory.

Strategies read the split from :attr:`incoming` / :attr:`replayed` (boolean row masks) and
never infer it from lengths or hook order. ``x, y = state.batch`` still unpacks all rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Segment:
    """Rows ``start:stop`` of a batch that one source appended, with their extra targets."""

    source: str
    start: int
    stop: int
    targets: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """``x`` (normalised, augmented, on the device) and ``y`` of every row, with provenance.

    ``index``: rows of ``state.train_data`` the first ``n_drawn`` rows were drawn from (raw
    images: ``state.train_data.x[batch.index]``); ``drawn_replayed``: which of those came from a
    memory joined to the training data; ``segments``: rows appended after them.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None
    drawn_replayed: torch.Tensor | None = None
    segments: list[Segment] = field(default_factory=list)
    n_drawn: int = field(init=False)

    def __post_init__(self) -> None:
        self.n_drawn = self.y.shape[0]

    # tuple compatibility: ``x, y = state.batch`` and ``state.batch[1]``
    def __iter__(self):
        return iter((self.x, self.y))

    def __getitem__(self, i: int) -> torch.Tensor:
        return (self.x, self.y)[i]

    def __len__(self) -> int:
        return 2

    @property
    def size(self) -> int:
        """Number of rows, drawn and appended."""
        return self.y.shape[0]

    @property
    def replayed(self) -> torch.Tensor:
        """Boolean mask over all rows: the row is a replayed sample of an earlier experience."""
        mask = torch.ones(self.size, dtype=torch.bool, device=self.y.device)
        if self.drawn_replayed is None:
            mask[: self.n_drawn] = False
        else:
            mask[: self.n_drawn] = self.drawn_replayed
        return mask

    @property
    def incoming(self) -> torch.Tensor:
        """Boolean mask over all rows: the row is a sample of the current experience."""
        return ~self.replayed

    @property
    def incoming_index(self) -> torch.Tensor:
        """Rows of ``state.train_data`` of the incoming samples (their raw images)."""
        if self.index is None:
            raise RuntimeError("this batch was not drawn from state.train_data")
        return self.index if self.drawn_replayed is None else self.index[~self.drawn_replayed]

    def has_replayed(self) -> bool:
        return bool(self.segments) or (self.drawn_replayed is not None and bool(self.drawn_replayed.any()))

    def append_replayed(self, x: torch.Tensor, y: torch.Tensor, source: str, **targets: torch.Tensor) -> Segment:
        """Append replayed rows (already prepared with ``state.prepare``) and their extra
        per-row targets; returns the segment, whose ``start:stop`` index the new rows of
        ``state.outputs``."""
        if len(x) != len(y) or any(len(t) != len(y) for t in targets.values()):
            raise ValueError("append_replayed: x, y and every target need one row per sample")
        start = self.size
        self.x = torch.cat([self.x, x.to(self.x.dtype)])
        self.y = torch.cat([self.y, y.to(self.y.dtype)])
        seg = Segment(source, start, self.size, dict(targets))
        self.segments.append(seg)
        return seg

    def segment(self, source: str) -> Segment | None:
        """The rows ``source`` appended (the last such segment), or ``None``."""
        for seg in reversed(self.segments):
            if seg.source == source:
                return seg
        return None
