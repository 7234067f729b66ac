"""A synthetic episodic scenario registered as a plugin, so ``cfs bench`` subprocesses in
tests/engine/test_resume.py can meta-train on it (``-p _resume_scenarios``)."""

from __future__ import annotations

from cfs import hookimpl
from cfs.registry import Registry

from fewshot_data import episodic_scenario


class Informative:
    """informative-5w1s: 40 synthetic classes that differ in 4 of 64 pixels (5-way 1-shot)."""

    name = "informative-5w1s"
    kind = "episodic"
    defaults = {"backbone": "mlp", "optimizer": "adam", "lr": 0.003, "meta_batch": 2, "val_episodes": 10,
                "test_episodes": 20}

    def __call__(self, cfg):
        return episodic_scenario(cfg=cfg)


@hookimpl
def cfs_add_scenarios(registry: Registry) -> None:
    registry.add(Informative())
