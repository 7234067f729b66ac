"""learn2learn interop: a ``learn2learn.data.TaskDataset`` as the episode source of a cfs run.

A learn2learn task is one ``(x, y)`` batch holding the N*(K+Q) images of an N-way task, in no
particular order, its labels any N distinct values (0..N-1 after ``RemapLabels``).
:func:`task_to_episodes` turns tasks into the :class:`~cfs.scenarios.episodes.EpisodeBatch` cfs
strategies read: classes numbered by sorted label, support and queries class by class, the
first K images of each class (in the task's order) the support. :class:`L2LEpisodeSource` has
the interface of :class:`~cfs.scenarios.episodic.EpisodeSampler`, so the episodic loop uses it
for a split through ``EpisodicSetup.sources`` (see :func:`use_tasksets`). Install learn2learn
with ``scripts/install-l2l.sh`` (the ``l2l`` extra); this module imports it lazily.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import torch

from cfs.errors import CfsError
from cfs.scenarios.episodes import EpisodeBatch

Task = Sequence[torch.Tensor]


def task_to_episodes(tasks: Sequence[Task], k_shot: int, q_query: int | None = None) -> EpisodeBatch:
    """Stack learn2learn tasks ``[(x, y), ...]`` into one :class:`EpisodeBatch`.

    Every task must have the same N classes count and at least ``k_shot + q_query`` images per
    class (``q_query=None``: all images after the support, the same count in every class)."""
    if not tasks:
        raise CfsError("no learn2learn tasks to convert: sample at least one task")
    sx, sy, qx, qy, n_way, q_used = [], [], [], [], None, q_query
    for t, task in enumerate(tasks):
        x, y = task[0], torch.as_tensor(task[1])
        labels = torch.unique(y)  # sorted: episode label i = i-th smallest task label
        if n_way is None:
            n_way = len(labels)
        if len(labels) != n_way:
            raise CfsError(f"learn2learn task {t} has {len(labels)} classes, task 0 has {n_way}: use one NWays")
        members = [torch.nonzero(y == c).flatten() for c in labels]
        per_class = min(len(m) for m in members)
        if q_used is None:
            q_used = per_class - k_shot
        if q_used < 1 or per_class < k_shot + q_used:
            raise CfsError(f"learn2learn task {t} has {per_class} images in a class, fewer than k_shot + q_query = "
                           f"{k_shot} + {max(q_used, 1)}: sample KShots(dataset, k_shot + q_query)")
        support = torch.cat([m[:k_shot] for m in members])
        query = torch.cat([m[k_shot : k_shot + q_used] for m in members])
        local = torch.arange(n_way)
        sx.append(x[support])
        qx.append(x[query])
        sy.append(local.repeat_interleave(k_shot))
        qy.append(local.repeat_interleave(q_used))
    return EpisodeBatch(torch.stack(sx), torch.stack(sy), torch.stack(qx), torch.stack(qy), n_way, k_shot, q_used)


class L2LEpisodeSource:
    """Episodes of a learn2learn ``TaskDataset`` behind the :class:`EpisodeSampler` interface.

    "Indices" are task numbers: with a finite ``num_tasks`` the TaskDataset caches each task's
    description, so ``fixed_indices`` names the same episodes in every run of a seed (methods
    are compared on identical test episodes); with ``num_tasks=-1`` each training draw is a
    fresh task and fixed evaluation episodes are impossible (an error). ``transform`` maps the
    stacked images (e.g. normalisation); by default the task images are used as they come,
    since learn2learn datasets apply their own transforms.
    """

    def __init__(self, taskset: Any, k_shot: int, q_query: int | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if not hasattr(taskset, "sample") or not hasattr(taskset, "__getitem__"):
            raise CfsError(f"{type(taskset).__name__} is not a learn2learn TaskDataset (needs sample() and [i])")
        self.taskset, self.k_shot, self.q_query, self.transform = taskset, int(k_shot), q_query, transform
        self.num_tasks = int(getattr(taskset, "num_tasks", -1))

    def sample_indices(self, n_tasks: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Task numbers drawn with ``generator`` (-1: a fresh task), as (support, query) alike."""
        if self.num_tasks > 0:
            ids = torch.randint(self.num_tasks, (n_tasks,), generator=generator)
        else:
            ids = torch.full((n_tasks,), -1, dtype=torch.long)
        return ids, ids

    def fixed_indices(self, n_episodes: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The same task numbers for a given ``seed`` and ``split`` in every run."""
        if self.num_tasks <= 0:
            raise CfsError("fixed evaluation episodes need a TaskDataset with a finite num_tasks "
                           "(e.g. TaskDataset(..., num_tasks=600))")
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(split.encode())) % (2**63))
        return self.sample_indices(n_episodes, gen)

    def batch(self, support: torch.Tensor, query: torch.Tensor, transform: Any = None, device: torch.device | str = "cpu",
              train: bool = False, generator: torch.Generator | None = None) -> EpisodeBatch:
        """Load the tasks numbered ``support`` (``query`` is the same tensor) as an EpisodeBatch on
        ``device``; the scenario's ``transform`` is not applied (see the class docstring)."""
        tasks = [self.taskset.sample() if int(i) < 0 else self.taskset[int(i)] for i in support.tolist()]
        episodes = task_to_episodes(tasks, self.k_shot, self.q_query)
        if self.transform is not None:
            episodes.support_x, episodes.query_x = self.transform(episodes.support_x), self.transform(episodes.query_x)
        return episodes.to(device)


def use_tasksets(setup: Any, k_shot: int, q_query: int | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, **tasksets: Any) -> Any:
    """Make learn2learn TaskDatasets the episode sources of an episodic scenario's splits:
    ``use_tasksets(scenario.episodic, 1, 15, train=train_tasks, test=test_tasks)``. Splits not
    named keep sampling the scenario's own data. Returns ``setup``."""
    unknown = set(tasksets) - {"train", "val", "test"}
    if unknown:
        raise CfsError(f"unknown split(s) {sorted(unknown)} for learn2learn tasksets: use train, val, test")
    for split, taskset in tasksets.items():
        setup.sources[split] = L2LEpisodeSource(taskset, k_shot, q_query, transform)
    return setup
