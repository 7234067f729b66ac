"""CUB-200-2011 (Wah et al. 2011) from its standard distribution layout.

``<root>/CUB_200_2011/`` (or ``<root>`` itself) holds ``images/<class>/<file>.jpg`` and the
metadata files ``images.txt`` (``<id> <class>/<file>``), ``image_class_labels.txt``
(``<id> <label 1..200>``) and ``train_test_split.txt`` (``<id> <1 = train>``). The train and
test parts keep the order of the image ids, as the FSCIL code bases (TOPIC, CEC, FACT, TEEN)
read them; labels are ``label - 1``. Images differ in size, so every image is resized to
``image_size`` x ``image_size`` (224 by default, the crop size of those code bases), and
normalised with ImageNet's mean and std as they do.

:func:`cub_train_listing` maps ``<class>/<file>`` to a train index, which the FSCIL index lists
(``CUB_200_2011/images/<class>/<file>`` per line) need.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from cfs.data.arrays import ArrayDataset, DataSplit
from cfs.data.cache import cached_split
from cfs.data.sources import decode_file, default_root
from cfs.errors import CfsError

_METADATA = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
#: The FSCIL code bases normalise CUB-200 with ImageNet's statistics (their backbone is
#: ImageNet-pretrained).
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def cub_folder(root: str | Path | None) -> Path:
    """The ``CUB_200_2011`` folder under ``root`` (or ``root`` itself); a one-line error if absent."""
    base = default_root(root)
    for folder in (base / "CUB_200_2011", base):
        if all((folder / name).is_file() for name in _METADATA) and (folder / "images").is_dir():
            return folder
    raise CfsError(f"CUB-200-2011 not found: expected {base / 'CUB_200_2011'}/images/<class>/*.jpg with "
                   f"{', '.join(_METADATA)} (the standard CUB_200_2011.tgz layout); pass its parent as --data-root")


def _read_pairs(path: Path) -> dict[int, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise CfsError(f"{path}:{n}: expected '<image id> <value>', got {line.strip()[:60]!r}")
        out[int(parts[0])] = parts[1].strip()
    return out


def cub_records(folder: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    """(train, test) lists of (relative image path, label) in image-id order, and class names."""
    paths = _read_pairs(folder / "images.txt")
    labels = _read_pairs(folder / "image_class_labels.txt")
    is_train = _read_pairs(folder / "train_test_split.txt")
    train, test, names = [], [], {}
    for i in sorted(paths):
        if i not in labels or i not in is_train:
            raise CfsError(f"{folder}: image id {i} of images.txt has no label or no train/test flag")
        label = int(labels[i]) - 1
        names.setdefault(label, paths[i].split("/")[0])
        (train if is_train[i] == "1" else test).append((paths[i], label))
    class_names = [names[k] for k in sorted(names)]
    if sorted(names) != list(range(len(class_names))):
        raise CfsError(f"{folder}: class labels must be 1..N without gaps")
    return train, test, class_names


def cub_train_listing(root: str | Path | None) -> dict[str, int]:
    """``<class>/<file>`` -> index in the train part of :func:`load_cub200`."""
    train, _, _ = cub_records(cub_folder(root))
    return {"/".join(Path(p).parts[-2:]): k for k, (p, _) in enumerate(train)}


def _decode(folder: Path, records: list[tuple[str, int]], image_size: int, names: list[str], part: str) -> ArrayDataset:
    import torchvision.transforms.v2.functional as TF  # here, not at start-up (seconds)

    images = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's decoder deprecation
        for rel, _ in tqdm(records, desc=f"decoding CUB-200 {part} ({len(records)} files)", unit="img",
                           leave=False, disable=None):
            img = decode_file(folder / "images" / rel)
            if tuple(img.shape[1:]) != (image_size, image_size):
                img = TF.resize(img, [image_size, image_size], antialias=True)
            images.append(img)
    x = torch.stack(images) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    return ArrayDataset(x, torch.tensor([y for _, y in records], dtype=torch.long), names)


def load_cub200(root: str | Path | None = None, download: bool = False, *, image_size: int = 224) -> DataSplit:
    """CUB-200-2011's official train/test split (5,994 / 5,794 images, 200 classes), RGB,
    resized to ``image_size``; decoded once and cached. ``download`` is not supported (the
    archive needs a manual download); it is accepted for a uniform signature."""
    folder = cub_folder(root)
    size = int(image_size)

    def build() -> DataSplit:
        train, test, names = cub_records(folder)
        tr = _decode(folder, train, size, names, "train")
        te = _decode(folder, test, size, names, "test")
        return DataSplit("cub200", tr, te, *IMAGENET_STATS)

    sources = [folder / "images"] + [folder / name for name in _METADATA]
    return cached_split("cub200", sources, {"image_size": size}, build)
