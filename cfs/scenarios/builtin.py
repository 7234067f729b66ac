"""Register the named benchmarks defined as YAML protocol files under ``benchmarks/protocols``.

A protocol file is data, not code: data set, split, class-order seed, augmentation,
normalisation and the training defaults the benchmark is usually run with. Adding a benchmark
of an existing kind means adding a file; the file's ``kind:`` names a registered scenario kind
(:class:`cfs.kinds.ScenarioKind`), whose ``build`` turns the spec and its data into a scenario.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import torch
import yaml

from cfs import hookimpl
from cfs.data import dataset_options, load_dataset
from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError
from cfs.kinds import ScenarioKind, default_manager, kind_for
from cfs.registry import Registry
from cfs.scenarios.base import Scenario
from cfs.scenarios.class_incremental import build_stream, split_classes


def transform_for(spec: dict, data: DataSplit) -> BatchTransform:
    aug = spec.get("augment") or {}
    norm = spec.get("normalize") or {}
    return BatchTransform(
        mean=tuple(norm.get("mean", data.mean)),
        std=tuple(norm.get("std", data.std)),
        crop_padding=int(aug.get("crop_padding", 0)),
        flip=bool(aug.get("flip", False)),
        brightness=float(aug.get("brightness", 0.0)),
        resize=int(spec["resize"]) if spec.get("resize") else None,
        autoaugment=str(aug["autoaugment"]) if aug.get("autoaugment") else None,
        cutout=int(aug.get("cutout", 0)),
    )


def build_class_incremental(spec: dict, cfg: Any, data: DataSplit) -> Scenario:
    """Class order by ``--class-order`` (seed: ``--class-order-seed`` overrides the protocol's;
    a file; the Curriculum Designer, :mod:`cfs.scenarios.curriculum`), then ``--split`` or the
    protocol's."""
    from cfs.scenarios.curriculum import resolve_class_order

    order, source = resolve_class_order(cfg, spec, data)
    steps = split_classes(data.num_classes, getattr(cfg, "split", None) or spec["split"])
    names = [data.train.class_names[c] for c in order] if data.train.class_names else []
    return Scenario(
        name=spec["name"], kind="class-incremental", experiences=build_stream(data, order, steps),
        class_order=order, class_names=names, transform=transform_for(spec, data),
        input_shape=data.input_shape, defaults=dict(spec.get("defaults") or {}),
        description=spec.get("description", ""), class_order_from=source,
    )


class ProtocolScenario:
    """A registered scenario factory: ``factory(config) -> Scenario``."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.kind = spec["kind"]
        self.summary = spec.get("description", "").strip().splitlines()[0] if spec.get("description") else ""
        self.defaults = dict(spec.get("defaults") or {})

    def __call__(self, cfg: Any) -> Scenario:
        """Build with the first-party kinds (``cfs bench`` calls :meth:`build` with the kind
        its plugin manager registers)."""
        return self.build(cfg, kind_for(default_manager().kinds, self.kind, f"scenario {self.name!r}"))

    def build(self, cfg: Any, kind: ScenarioKind) -> Scenario:
        """Load the data set and let the protocol's kind build the scenario from it."""
        limit = getattr(cfg, "max_train_per_class", None)
        if limit and not kind.max_train_per_class:
            raise CfsError(f"--max-train-per-class does not apply to {self.kind} scenarios such as {self.name!r}")
        options = dict(self.spec.get("dataset_options") or {})
        size = getattr(cfg, "image_size", None)
        if size is not None:
            if "image_size" not in dataset_options(self.spec["dataset"]):
                raise CfsError(f"--image-size applies to data sets decoded from image files (image folders, "
                               f"Omniglot, mini-ImageNet); {self.spec['dataset']!r} of {self.name!r} has a fixed size")
            options["image_size"] = size
        data = load_dataset(self.spec["dataset"], root=getattr(cfg, "data_root", None),
                            download=bool(getattr(cfg, "download", False)), **options)
        if limit:
            data = DataSplit(data.name, first_per_class(data.train, limit), data.test, data.mean, data.std)
        return kind.build(self.spec, cfg, data)


def first_per_class(data: ArrayDataset, limit: int) -> ArrayDataset:
    """The first ``limit`` training samples of every class (``--max-train-per-class``), for
    quick runs on large data sets; deterministic, so every strategy sees the same subset."""
    keep = torch.zeros(len(data), dtype=torch.bool)
    for c in data.y.unique():
        keep[torch.nonzero(data.y == c).flatten()[:limit]] = True
    return data.subset(keep)


def protocol_specs() -> list[dict]:
    """Every ``*.yaml`` under ``cfs_benchmarks/protocols``, each with its ``name``."""
    specs = []
    folder = resources.files("cfs_benchmarks") / "protocols"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith((".yaml", ".yml")):
            spec = yaml.safe_load(item.read_text())
            spec.setdefault("name", item.name.rsplit(".", 1)[0])
            specs.append(spec)
    return specs


@hookimpl
def cfs_add_scenarios(registry: Registry) -> None:
    for spec in protocol_specs():
        registry.add(ProtocolScenario(spec), name=spec["name"])
