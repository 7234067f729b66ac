"""Shared test fixtures for data: the offline real data sets and an isolated cache folder."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision

# ``../shared/data`` seen from the repository root (the parent of this tests folder).
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point ``$CFS_CACHE_DIR`` at a temporary folder for the whole session, so tests never
    read a stale entry from, or write 185 MB into, the user's ``~/.cache/cfs``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CFS_CACHE_DIR", str(tmp_path_factory.mktemp("cfs-cache")))
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of offline real data archives (see its README.md)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar10_root(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding ``cifar10-jpg/{train,test}/<class>/*.jpg``, extracted once per session.

    GNU tar extracts the 60,000 files in about a second, Python's tarfile in about ten, so
    tar is used where it exists.
    """
    archive = shared_data / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is not present")
    root = tmp_path_factory.mktemp("cifar10")
    if shutil.which("tar"):
        subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(root, filter="data")
    return root


def _write_cifar_pickles(root: Path, spec: type, n_classes: int, per_class: int) -> None:
    """A tiny CIFAR-10/100 in torchvision's on-disk format; every image is filled with its
    label, so a label/image misalignment shows."""
    folder = root / spec.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if spec is torchvision.datasets.CIFAR10 else "fine_labels"
    files = spec.train_list + spec.test_list
    for i, (filename, _md5) in enumerate(files):
        labels = [k for k in range(n_classes) for _ in range(per_class)][:: 1 if i % 2 else -1]
        entry = {
            "batch_label": filename,
            "data": np.repeat(np.array(labels, dtype=np.uint8)[:, None], 3072, axis=1),
            label_key: labels,
            "filenames": [f"{filename}_{j}.png" for j in range(len(labels))],
        }
        if label_key == "fine_labels":
            entry["coarse_labels"] = [k // 5 for k in labels]
        with open(folder / filename, "wb") as f:
            pickle.dump(entry, f)
    names = [f"name{k:03d}" for k in range(n_classes)]
    meta = {spec.meta["key"]: names}
    if spec is torchvision.datasets.CIFAR100:
        meta["coarse_label_names"] = [f"super{k}" for k in range(n_classes // 5)]
    with open(folder / spec.meta["filename"], "wb") as f:
        pickle.dump(meta, f)


@pytest.fixture(scope="session")
def write_cifar_pickles():
    """``write(root, torchvision.datasets.CIFAR10 | CIFAR100, n_classes, per_class)``: tiny CIFAR
    files in torchvision's on-disk format, for the data sets that are not available offline."""
    return _write_cifar_pickles
