"""Few-shot data sets: every image of every class, plus which classes are meta-train/val/test.

Few-shot benchmarks split *classes*, not images: a model meta-trains on one set of classes and
is tested on episodes of classes it never saw. A loader here returns a :class:`FewShotSplit`,
a :class:`DataSplit` whose ``train`` part holds all images of all classes (``test`` is empty)
and whose ``class_splits`` maps ``"train"``/``"val"``/``"test"`` to label lists. The episodic
scenario (:mod:`cfs.scenarios.episodic`) samples its episodes from those class sets; any other
labelled data set works too, with a class split chosen by the protocol.

Decoded pixels go through the disk cache (:mod:`cfs.data.cache`), so only the first run pays
for decoding thousands of PNG/JPEG files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.cache import cached_split
from cfs.data.decode import decode_images
from cfs.data.sources import CIFAR100_STATS, channel_stats, decode_file, default_root, load_cifar100
from cfs.errors import CfsError

SPLITS = ("train", "val", "test")

# CIFAR-FS (Bertinetto et al., ICLR 2019): 64/16/20 classes; the 36 val+test classes by their
# torchvision CIFAR-100 names (the split files of the r2d2 repository, also torchmeta's assets).
CIFAR_FS_VAL = ("beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea",
                "camel", "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor")
CIFAR_FS_TEST = ("whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard",
                 "plain", "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle",
                 "pickup_truck", "rocket")
# FC100 (Oreshkin et al., NeurIPS 2018): split by superclass, 12/4/4 superclasses (60/20/20
# classes). Val: large carnivores, large omnivores and herbivores, non-insect invertebrates,
# trees; test: aquatic mammals, insects, medium-sized mammals, people.
FC100_VAL = ("bear", "leopard", "lion", "tiger", "wolf", "camel", "cattle", "chimpanzee", "elephant", "kangaroo",
             "crab", "lobster", "snail", "spider", "worm", "maple_tree", "oak_tree", "palm_tree", "pine_tree",
             "willow_tree")
FC100_TEST = ("beaver", "dolphin", "otter", "seal", "whale", "bee", "beetle", "butterfly", "caterpillar",
              "cockroach", "fox", "porcupine", "possum", "raccoon", "skunk", "baby", "boy", "girl", "man", "woman")


@dataclass
class FewShotSplit(DataSplit):
    """A :class:`DataSplit` with all images in ``train`` and the meta-split of its classes.

    ``class_splits["train"|"val"|"test"]`` are label lists (disjoint; ``val`` may be empty);
    ``groups[k]`` optionally names the group label ``k`` belongs to (an Omniglot alphabet).
    """

    class_splits: dict[str, list[int]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


def _empty_like(data: ArrayDataset) -> ArrayDataset:
    return ArrayDataset(data.x[:0], data.y[:0], data.class_names)


def _decode_all(paths: list[Path], mode: str, image_size: int | None) -> torch.Tensor:
    """Decode ``paths`` in ``mode`` (``"RGB"`` or ``"GRAY"``), in parallel (see
    :mod:`cfs.data.decode`); an unreadable or corrupt file is a one-line error naming it."""
    from torchvision.io import ImageReadMode

    read_mode = ImageReadMode[mode]
    return decode_images(
        paths, lambda p: decode_file(p, read_mode), image_size, f"decoding ({len(paths)} files)",
        lambda sizes: f"images differ in size ({sizes[:3]}); pass the loader option image_size=N",
    )


# ---------------------------------------------------------------- Omniglot


def _omniglot_subsets(root: Path) -> list[Path]:
    """The ``images_*`` folders (upstream layout) under ``root`` or a known sub-folder."""
    for base in (root, root / "omniglot-small", root / "omniglot", root / "omniglot-py"):
        subsets = sorted(p for p in base.glob("images_*") if p.is_dir()) if base.is_dir() else []
        if subsets:
            return subsets
    raise CfsError(
        f"Omniglot not found: expected {root}/images_background*/<alphabet>/<character>/*.png (upstream "
        f"layout); extract omniglot-small.tar.gz or the brendenlake/omniglot archives into {root}"
    )


def _omniglot_classes(subsets: list[Path]) -> tuple[list[str], list[list[Path]], dict[str, int]]:
    """Distinct (alphabet, character) classes in subset order; the subset index where each
    alphabet first appears. A class present in several subsets (Greek and Latin in both small
    background sets) is kept once, from its first subset."""
    names, files, first_subset = [], [], {}
    seen = set()
    for s, subset in enumerate(subsets):
        for alphabet in sorted(p for p in subset.iterdir() if p.is_dir()):
            first_subset.setdefault(alphabet.name, s)
            for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                key = f"{alphabet.name}/{char.name}"
                if key in seen:
                    continue
                pngs = sorted(char.glob("*.png"))
                if pngs:
                    seen.add(key)
                    names.append(key)
                    files.append(pngs)
    if not names:
        raise CfsError(f"no <alphabet>/<character>/*.png files under {subsets[0].parent}")
    return names, files, first_subset


def load_omniglot(
    root: str | Path | None = None,
    download: bool = False,
    *,
    image_size: int = 28,
    rotations: bool = False,
    test_alphabets: Sequence[str] | None = None,
    val_alphabets: Sequence[str] = (),
) -> FewShotSplit:
    """Omniglot in its upstream folder layout, greyscale, resized to ``image_size``.

    Classes are (alphabet, character) pairs, duplicates across subsets dropped. The class split
    is by alphabet, so meta-test alphabets are never seen in meta-training: by default the test
    alphabets are those that first appear in the last ``images_*`` folder (``images_evaluation``
    of the full data set: Lake et al.'s background/evaluation split; of the two small
    background sets, the alphabets new in the second). ``test_alphabets``/``val_alphabets``
    name them explicitly instead. ``rotations`` adds each character rotated by 90, 180 and 270
    degrees as three extra classes of the same split (Santoro et al.; Vinyals et al.).
    ``download`` is accepted for a uniform signature; extract the archive instead.
    """
    subsets = _omniglot_subsets(default_root(root))
    names, files, first_subset = _omniglot_classes(subsets)
    size = int(image_size)

    def build() -> DataSplit:
        paths = [p for group in files for p in group]
        labels = [k for k, group in enumerate(files) for _ in group]
        data = ArrayDataset(_decode_all(paths, "GRAY", size), torch.tensor(labels), names)
        return DataSplit("omniglot", data, _empty_like(data), (0.0,), (1.0,))

    cached = cached_split("omniglot", subsets, {"image_size": size}, build)
    alphabets = [n.split("/")[0] for n in names]
    known = set(alphabets)
    last = len(subsets) - 1
    test = set(test_alphabets) if test_alphabets is not None else {a for a, s in first_subset.items() if s == last and last > 0}
    val = set(val_alphabets)
    for given in (test, val):
        if given - known:
            raise CfsError(f"unknown Omniglot alphabet(s) {sorted(given - known)} (valid: {', '.join(sorted(known))})")
    if not test:
        raise CfsError("no Omniglot test alphabets: pass test_alphabets=[...] (dataset option)")
    if test & val:
        raise CfsError(f"alphabets {sorted(test & val)} are both test and val alphabets")
    x, y, class_names, groups = cached.train.x, cached.train.y, list(names), list(alphabets)
    if rotations:
        n = len(names)
        xs, ys = [x], [y]
        for k in (1, 2, 3):
            xs.append(torch.rot90(x, k, dims=(2, 3)))
            ys.append(y + k * n)
            class_names += [f"{c}/rot{90 * k}" for c in names]
            groups += alphabets
        x, y = torch.cat(xs), torch.cat(ys)
    splits = {"train": [], "val": [], "test": []}
    for label, alphabet in enumerate(groups):
        splits["test" if alphabet in test else "val" if alphabet in val else "train"].append(label)
    data = ArrayDataset(x, y, class_names)
    train_mask = torch.isin(y, torch.tensor(splits["train"]))
    mean, std = channel_stats(x[train_mask])
    return FewShotSplit("omniglot", data, _empty_like(data), mean, std, splits, groups)


# ---------------------------------------------------------------- mini-ImageNet


def _mini_folder(root: Path) -> Path:
    for base in (root, root / "mini-imagenet", root / "miniImageNet", root / "mini_imagenet"):
        if (base / "images").is_dir() and any((base / f"{s}.csv").is_file() for s in SPLITS):
            return base
    raise CfsError(
        f"mini-ImageNet not found: expected {root}/images/*.jpg and train/val/test.csv (Ravi & Larochelle "
        f"format); extract mini-imagenet-valtest.tar.gz into {root}"
    )


def _read_split_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0][:2]] != ["filename", "label"]:
        raise CfsError(f"{path} must start with the header 'filename,label'")
    return [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2]


def load_mini_imagenet(
    root: str | Path | None = None, download: bool = False, *, image_size: int = 84
) -> FewShotSplit:
    """mini-ImageNet in the usual CSV format: ``images/*.jpg`` and whichever of ``train.csv``,
    ``val.csv``, ``test.csv`` exist (columns ``filename,label``), each CSV one class split.

    Labels follow the CSVs (train, then val, then test; classes in order of first appearance).
    Images are RGB, resized to ``image_size`` if they differ; mean/std come from the meta-train
    classes (the val classes when there is no train.csv). ``download`` is accepted for a
    uniform signature; there is nothing to download.
    """
    folder = _mini_folder(default_root(root)).resolve()
    csvs = {s: folder / f"{s}.csv" for s in SPLITS if (folder / f"{s}.csv").is_file()}
    size = int(image_size)
    rows = {s: _read_split_csv(p) for s, p in csvs.items()}
    class_names: list[str] = []
    splits: dict[str, list[int]] = {s: [] for s in SPLITS}
    index: dict[str, int] = {}
    for s, entries in rows.items():
        for _, wnid in entries:
            if wnid not in index:
                index[wnid] = len(class_names)
                class_names.append(wnid)
                splits[s].append(index[wnid])

    def build() -> DataSplit:
        paths, labels = [], []
        for entries in rows.values():
            for filename, wnid in entries:
                path = folder / "images" / filename
                if not path.is_file():
                    raise CfsError(f"{path} is listed in a split CSV but missing; re-extract the data set")
                paths.append(path)
                labels.append(index[wnid])
        data = ArrayDataset(_decode_all(paths, "RGB", size), torch.tensor(labels), class_names)
        return DataSplit("mini-imagenet", data, _empty_like(data), (0.0,) * 3, (1.0,) * 3)

    cached = cached_split("mini-imagenet", [folder / "images", *csvs.values()], {"image_size": size}, build)
    data = cached.train
    stats_classes = splits["train"] or splits["val"] or splits["test"]
    mean, std = channel_stats(data.subset(torch.isin(data.y, torch.tensor(stats_classes))).x)
    return FewShotSplit("mini-imagenet", data, _empty_like(data), mean, std, splits)


# ---------------------------------------------------------------- CIFAR-FS and FC100


def _cifar_split(root: str | Path | None, download: bool, name: str, val: Sequence[str],
                 test: Sequence[str]) -> FewShotSplit:
    """All 600 images of each CIFAR-100 class (train and test parts together), classes split
    by name into meta-train/val/test."""
    cifar = load_cifar100(root, download=download)
    data = ArrayDataset.concat([cifar.train, cifar.test])
    names = list(cifar.train.class_names)
    missing = sorted((set(val) | set(test)) - set(names))
    if missing:
        raise CfsError(f"CIFAR-100 meta file lacks classes {missing}; replace cifar-100-python with the original")
    splits = {"val": [names.index(c) for c in val], "test": [names.index(c) for c in test]}
    held = set(splits["val"]) | set(splits["test"])
    splits["train"] = [k for k in range(len(names)) if k not in held]
    return FewShotSplit(name, data, _empty_like(data), *CIFAR100_STATS, {s: splits[s] for s in SPLITS})


def load_cifar_fs(root: str | Path | None = None, download: bool = False) -> FewShotSplit:
    """CIFAR-FS (Bertinetto et al. 2019) from torchvision's CIFAR-100: 64/16/20 classes, 32x32."""
    return _cifar_split(root, download, "cifar-fs", CIFAR_FS_VAL, CIFAR_FS_TEST)


def load_fc100(root: str | Path | None = None, download: bool = False) -> FewShotSplit:
    """FC100 (Oreshkin et al. 2018) from torchvision's CIFAR-100: 60/20/20 classes by superclass."""
    return _cifar_split(root, download, "fc100", FC100_VAL, FC100_TEST)


# ---------------------------------------------------------------- any image folder


def load_fewshot_imagefolder(
    root: str | Path | None = None, download: bool = False, *, image_size: int | None = None
) -> FewShotSplit:
    """Few-shot splits from folders: ``<root>/{train,val,test}/<class>/*`` (whichever exist),
    each folder one class split; images decoded as RGB (``image_size`` resizes)."""
    base = default_root(root)
    present = [s for s in SPLITS if (base / s).is_dir()]
    if not present:
        raise CfsError(f"no {base}/train, {base}/val or {base}/test folder of <class>/ image folders found")
    parts, splits, names, offset = [], {s: [] for s in SPLITS}, [], 0
    for s in present:
        classes = sorted(p.name for p in (base / s).iterdir() if p.is_dir())
        files = [sorted(f for f in (base / s / c).iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
                 for c in classes]
        paths = [f for group in files for f in group]
        if not paths:
            raise CfsError(f"no .jpg/.png images found in {base / s}/<class>/")
        labels = [offset + k for k, group in enumerate(files) for _ in group]
        size = None if image_size is None else int(image_size)
        part = cached_split(f"fewshot-folder-{s}", base / s, {"image_size": size},
                            lambda: _folder_part(paths, labels, size))
        parts.append(part.train)
        names += [f"{s}/{c}" for c in classes]
        splits[s] = list(range(offset, offset + len(classes)))
        offset += len(classes)
    joined = ArrayDataset.concat(parts)
    data = ArrayDataset(joined.x, joined.y, names)
    stats_classes = splits["train"] or splits[present[0]]
    mean, std = channel_stats(data.subset(torch.isin(data.y, torch.tensor(stats_classes))).x)
    return FewShotSplit("fewshot-imagefolder", data, _empty_like(data), mean, std, splits)


def _folder_part(paths: list[Path], labels: list[int], size: int | None) -> DataSplit:
    data = ArrayDataset(_decode_all(paths, "RGB", size), torch.tensor(labels))
    return DataSplit("folder", data, _empty_like(data), (0.0,) * 3, (1.0,) * 3)


__all__ = ["FewShotSplit", "load_cifar_fs", "load_fc100", "load_fewshot_imagefolder", "load_mini_imagenet",
           "load_omniglot"]
