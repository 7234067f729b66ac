"""Few-shot loaders: the real Omniglot archive, a generated mini-ImageNet CSV tree and a
generated CIFAR-100 in torchvision's pickle format (real CIFAR-100 is not available offline)."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_jpeg

from cfs.config import RunConfig
from cfs.data import load_dataset
from cfs.data.fewshot import CIFAR_FS_TEST, CIFAR_FS_VAL, FC100_TEST, FC100_VAL
from cfs.errors import CfsError
from cfs.plugins import get_plugin_manager


@pytest.fixture(scope="module")
def omniglot_root(shared_data: Path, tmp_path_factory) -> Path:
    archive = shared_data / "omniglot-small.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is not present")
    root = tmp_path_factory.mktemp("omniglot")
    subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    return root


def test_omniglot_small_classes_split_by_unseen_alphabets(omniglot_root):
    d = load_dataset("omniglot", root=omniglot_root)
    assert len(d.train.class_names) == 242  # Greek and Latin appear in both subsets: kept once
    assert len(set(d.train.class_names)) == 242
    assert d.train.x.shape == (242 * 20, 1, 28, 28) and d.train.x.dtype == torch.uint8
    assert torch.bincount(d.train.y).tolist() == [20] * 242
    alphabet = {k: n.split("/")[0] for k, n in enumerate(d.train.class_names)}
    test_alpha = {alphabet[k] for k in d.class_splits["test"]}
    train_alpha = {alphabet[k] for k in d.class_splits["train"]}
    assert test_alpha == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert train_alpha == {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"}
    assert len(d.class_splits["test"]) == 47 + 42 + 17 and not d.class_splits["val"]


def test_omniglot_rotations_and_named_val_alphabets(omniglot_root):
    plain = load_dataset("omniglot", root=omniglot_root)
    rot = load_dataset("omniglot", root=omniglot_root, rotations=True, val_alphabets=["Greek"])
    assert len(rot.train.class_names) == 4 * 242
    k = 5
    first = rot.train.x[rot.train.y == k][0]
    assert torch.equal(rot.train.x[rot.train.y == k + 242][0], torch.rot90(first, 1, dims=(1, 2)))
    assert torch.equal(first, plain.train.x[plain.train.y == k][0])
    greek = [c for c, n in enumerate(rot.train.class_names) if n.startswith("Greek/")]
    assert sorted(rot.class_splits["val"]) == greek and len(greek) == 4 * 24
    with pytest.raises(CfsError, match="unknown Omniglot alphabet"):
        load_dataset("omniglot", root=omniglot_root, test_alphabets=["Klingon"])


def test_omniglot_protocol_builds_an_episodic_scenario(omniglot_root):
    pm = get_plugin_manager()
    cfg = RunConfig(data_root=str(omniglot_root), k_shot=5)
    sc = pm.scenarios.get("omniglot-5w1s")(cfg)
    assert sc.kind == "episodic" and sc.input_shape == (1, 28, 28)
    assert sc.episodic.eval_shape.k_shot == 5 and sc.episodic.eval_shape.n_way == 5  # --k-shot overrides
    assert len(sc.episodic.classes["test"]) == 4 * 106
    assert not set(sc.episodic.classes["train"]) & set(sc.episodic.classes["test"])


def fake_mini_imagenet(root: Path, splits=("val", "test"), per_class: int = 3) -> Path:
    folder = root / "mini-imagenet"
    (folder / "images").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for s, split in enumerate(splits):
        rows = ["filename,label"]
        for c in range(3):
            wnid = f"n0{s}{c}"
            for i in range(per_class):
                name = f"{wnid}{i:08d}.jpg"
                write_jpeg(torch.randint(0, 255, (3, 84, 84), dtype=torch.uint8, generator=g),
                           str(folder / "images" / name))
                rows.append(f"{name},{wnid}")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_mini_imagenet_csv_layout(tmp_path):
    fake_mini_imagenet(tmp_path)
    d = load_dataset("mini-imagenet", root=tmp_path)
    assert d.train.x.shape == (18, 3, 84, 84)
    assert d.class_splits == {"train": [], "val": [0, 1, 2], "test": [3, 4, 5]}
    assert d.train.class_names == ["n000", "n001", "n002", "n010", "n011", "n012"]
    small = load_dataset("mini-imagenet", root=tmp_path, image_size=32)
    assert small.train.x.shape == (18, 3, 32, 32)


def test_mini_imagenet_missing_is_one_line_error(tmp_path):
    with pytest.raises(CfsError, match="mini-ImageNet not found") as err:
        load_dataset("mini-imagenet", root=tmp_path)
    assert "\n" not in str(err.value)


def fake_cifar100(root: Path) -> None:
    """torchvision's cifar-100-python layout: meta, train, test pickles (6 images per class)."""
    names = sorted(set(CIFAR_FS_VAL) | set(CIFAR_FS_TEST) | set(FC100_VAL) | set(FC100_TEST))
    names += [f"filler_{k}" for k in range(100 - len(names))]
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": []}, f)
    rng = np.random.default_rng(0)
    for part, per in (("train", 5), ("test", 1)):
        labels = [c for c in range(100) for _ in range(per)]
        data = rng.integers(0, 255, (len(labels), 3072), dtype=np.uint8)
        with open(folder / part, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels}, f)


@pytest.mark.parametrize("name,val,test,n", [("cifar-fs", CIFAR_FS_VAL, CIFAR_FS_TEST, (64, 16, 20)),
                                            ("fc100", FC100_VAL, FC100_TEST, (60, 20, 20))])
def test_cifar_fs_and_fc100_standard_splits(tmp_path, name, val, test, n):
    fake_cifar100(tmp_path)
    d = load_dataset(name, root=tmp_path)
    assert tuple(len(d.class_splits[s]) for s in ("train", "val", "test")) == n
    names = d.train.class_names
    assert {names[c] for c in d.class_splits["test"]} == set(test)
    assert {names[c] for c in d.class_splits["val"]} == set(val)
    assert d.train.x.shape == (600, 3, 32, 32)  # train and test images of CIFAR-100 pooled


def test_cifar_fs_without_cifar100_is_one_line_error(tmp_path):
    with pytest.raises(CfsError, match="CIFAR-100 not found") as err:
        load_dataset("cifar-fs", root=tmp_path)
    assert "\n" not in str(err.value)
