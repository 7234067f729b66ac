"""What every scenario hands the engine: experiences, class order, transforms, defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cfs.data.arrays import ArrayDataset
from cfs.data.transforms import BatchTransform


@dataclass
class Experience:
    """One step of a stream: the classes it introduces and their train and test data.

    Labels are already remapped to the scenario's class order (label k = k-th class seen).
    """

    index: int
    classes: list[int]
    train: ArrayDataset
    test: ArrayDataset


@dataclass
class Scenario:
    """A named stream of experiences plus everything needed to reproduce it."""

    name: str
    #: The name of a registered scenario kind (:class:`cfs.kinds.ScenarioKind`), which says how
    #: the scenario is trained, measured, written and reported.
    kind: str
    experiences: list[Experience]
    class_order: list[int]
    class_names: list[str]
    transform: BatchTransform
    input_shape: tuple[int, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Few-shot scenarios (kind ``episodic``) have no experiences; their data and meta-train /
    #: val / test class sets live here (:class:`cfs.scenarios.episodic.EpisodicSetup`).
    episodic: Any = None
    #: How the class order was chosen (``--class-order``: seed, file or curriculum, and its
    #: details); recorded in ``run.json``.
    class_order_from: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_order)

    def describe(self) -> dict[str, Any]:
        """What the results folder records about the stream."""
        return {
            "name": self.name,
            "kind": self.kind,
            "n_experiences": len(self.experiences),
            "classes_per_experience": [e.classes for e in self.experiences],
            "class_order": self.class_order,
            "train_sizes": [len(e.train) for e in self.experiences],
            "test_sizes": [len(e.test) for e in self.experiences],
            **({"episodic": self.episodic.describe()} if self.episodic is not None else {}),
            **({"class_order_from": self.class_order_from} if self.class_order_from else {}),
        }
