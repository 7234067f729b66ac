"""GDumb's greedy class-balanced sampler (Prabhu et al., ECCV 2020, section 3 "Sampler").

A memory of at most ``capacity`` samples that is offered a stream one sample at a time and
keeps it as class-balanced as the stream allows, without knowing the classes in advance:

* while the memory has room, every sample is stored;
* once it is full, a sample of class ``y`` is stored only if ``y`` holds fewer than
  ``capacity / |Y|`` samples (``Y``: the classes seen so far, ``y`` included, so a new class
  always gets in); it then replaces a uniformly random stored sample of the largest class
  (the smallest label among equally large classes).

The released code (``drimpossible/GDumb``) reaches the same end state offline by keeping the
first ``capacity // n_classes`` samples of every class; the rule above is the paper's online
form, which needs no class count up front. Unlike :class:`cfs.memory.ClassBalancedMemory`
(exemplars chosen per class after an experience, old classes shrunk to a quota) this memory
is fed sample by sample and evicts only while it is full, so a class that never reaches the
quota keeps every sample it offered.
"""

from __future__ import annotations

import random

import torch

from cfs.data.arrays import ArrayDataset
from cfs.errors import CfsError


class GreedyBalancedMemory:
    """GDumb's greedy class-balanced memory: ``x``/``y`` slots plus per-class slot lists."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise CfsError(f"memory size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.slots: dict[int, list[int]] = {}  # class -> slots holding it
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def counts(self) -> dict[int, int]:
        """Samples stored per class."""
        return {c: len(s) for c, s in sorted(self.slots.items()) if s}

    def _plan(self, labels: list[int], rng: random.Random) -> dict[int, int]:
        """Run the greedy rule over ``labels`` (in stream order); return slot -> offered index
        of the sample that finally occupies it (earlier writes to a slot are overwritten)."""
        writes: dict[int, int] = {}
        for i, c in enumerate(labels):
            owned = self.slots.setdefault(c, [])
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            elif len(owned) < self.capacity / len(self.slots):  # |Y|: every class offered so far
                largest = max(self.slots, key=lambda k: (len(self.slots[k]), -k))
                victims = self.slots[largest]
                slot = victims.pop(rng.randrange(len(victims)))
            else:
                continue
            owned.append(slot)
            writes[slot] = i
        return writes

    def update(self, data: ArrayDataset, generator: torch.Generator | None = None, shuffle: bool = True) -> None:
        """Offer every sample of ``data``, in a seeded random order when ``shuffle`` (an
        experience's data set is often sorted by class; the paper's stream is not)."""
        n = len(data)
        if n == 0:
            return
        dev = generator.device if generator is not None else "cpu"
        order = torch.randperm(n, generator=generator, device=dev).cpu() if shuffle else torch.arange(n)
        seed = int(torch.randint(2**62, (1,), generator=generator, device=dev))
        writes = self._plan(data.y.cpu()[order].tolist(), random.Random(seed))
        if self.x is None:
            self.x = torch.zeros((self.capacity, *data.x.shape[1:]), dtype=data.x.dtype, device=data.x.device)
            self.y = torch.zeros(self.capacity, dtype=data.y.dtype, device=data.y.device)
        if not writes:
            return
        slots = torch.tensor(list(writes), dtype=torch.long, device=self.x.device)
        src = order[torch.tensor(list(writes.values()), dtype=torch.long)].to(data.x.device)
        self.x[slots] = data.x[src].to(self.x.device, self.x.dtype)
        self.y[slots] = data.y[src].to(self.y.device, self.y.dtype)

    def dataset(self) -> ArrayDataset | None:
        """The stored samples as one data set (``None`` while empty)."""
        if not self.size:
            return None
        return ArrayDataset(self.x[: self.size].clone(), self.y[: self.size].clone())

    def state_dict(self) -> dict:
        def cpu(t: torch.Tensor | None):
            return None if t is None else t.cpu().clone()

        return {"capacity": self.capacity, "size": self.size, "x": cpu(self.x), "y": cpu(self.y),
                "slots": {c: list(s) for c, s in self.slots.items()}}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.capacity, self.size = state["capacity"], state["size"]
        self.x = None if state["x"] is None else state["x"].to(device)
        self.y = None if state["y"] is None else state["y"].to(device)
        self.slots = {int(c): list(s) for c, s in state["slots"].items()}
