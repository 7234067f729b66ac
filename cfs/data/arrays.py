"""Labelled rows: the one data container every scenario and loop uses.

Small benchmarks fit in memory, so a data set is two tensors (images, labels) that are moved
to the run's device once; batches are index slices, with no DataLoader worker overhead.
Images larger than memory stay on disk: ``x`` is then a :class:`~cfs.data.diskrows.LazyRows`
(indexing it reads those rows, ahead of the loop), and subsets, device moves and
concatenations are index vectors into the file, not copies of its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cfs.data.diskrows import LazyRows


@dataclass
class ArrayDataset:
    """Images ``x`` (N, C, H, W) and labels ``y`` (N,).

    ``x`` is ``uint8`` (0-255) for image data, kept compact until a batch is normalised, or
    ``float32`` for data that is already real-valued (features, synthetic data); a
    :class:`~cfs.data.diskrows.LazyRows` for uint8 images kept on disk.
    ``class_names[k]`` names label ``k``.
    """

    x: torch.Tensor | LazyRows
    y: torch.Tensor
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.y.max().item()) + 1

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        """Rows at ``index`` (a bool mask or integer indices), sharing class names; of rows on
        disk, a view (an index vector), else a copy."""
        x = self.x.subset(index) if isinstance(self.x, LazyRows) else self.x[index]
        return ArrayDataset(x, self.y[index], self.class_names)

    def with_classes(self, classes) -> "ArrayDataset":
        """Rows whose label is in ``classes``."""
        classes = torch.as_tensor(list(classes), dtype=torch.long, device=self.y.device)
        return self.subset(torch.isin(self.y, classes))

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """On ``device``; rows on disk stay there and are gathered onto it batch by batch."""
        return ArrayDataset(self.x.to(device), self.y.to(device), self.class_names)

    @property
    def on_disk(self) -> bool:
        return isinstance(self.x, LazyRows)

    @staticmethod
    def concat(parts: list["ArrayDataset"]) -> "ArrayDataset":
        """Concatenate data sets that share a label space (the first one's class names); when
        any part's rows are on disk, the result is a view of all parts' rows."""
        xs = [p.x for p in parts]
        x = LazyRows.concat(xs) if any(isinstance(v, LazyRows) for v in xs) else torch.cat(xs)
        return ArrayDataset(x, torch.cat([p.y for p in parts]), parts[0].class_names)


@dataclass
class DataSplit:
    """A data set's train and test parts plus the statistics its images are normalised with."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])
