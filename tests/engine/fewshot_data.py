"""A small synthetic few-shot data set (helper module, not tests) and an episodic scenario over it, for loop tests.

Classes differ only in 4 of 64 pixels (far-apart means, tight within a class) while the other
60 pixels are loud shared noise: nearest-prototype classification on raw or randomly embedded
pixels is poor, a meta-learned embedding that finds the informative pixels is accurate on
classes it never saw, so learning shows as a large gain on the meta-test classes.
"""

from __future__ import annotations

import torch

from cfs.config import RunConfig
from cfs.data.arrays import ArrayDataset
from cfs.data.fewshot import FewShotSplit
from cfs.scenarios.episodic import build_episodic


def informative_pixels(n_classes: int = 40, per_class: int = 30, seed: int = 0) -> FewShotSplit:
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(n_classes, 64)
    means[:, :4] = 3.0 * torch.randn(n_classes, 4, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    noise = torch.randn(len(y), 64, generator=g)
    noise[:, :4] *= 0.3
    noise[:, 4:] *= 3.0
    x = (means[y] + noise).view(-1, 1, 8, 8)
    data = ArrayDataset(x, y, [f"c{k}" for k in range(n_classes)])
    splits = {"train": list(range(0, 24)), "val": list(range(24, 30)), "test": list(range(30, 40))}
    return FewShotSplit("informative", data, ArrayDataset(x[:0], y[:0]), (0.0,), (1.0,), splits)


def episodic_scenario(n_way: int = 5, k_shot: int = 1, q_query: int = 5, cfg: RunConfig | None = None):
    spec = {"name": "informative-5w1s", "episodes": {"n_way": n_way, "k_shot": k_shot, "q_query": q_query}}
    return build_episodic(spec, cfg or RunConfig(), informative_pixels())
