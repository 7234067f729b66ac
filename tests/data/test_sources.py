"""Loaders on real offline data (CIFAR-10 JPEGs, Debian's Fashion-MNIST, sklearn digits) and
on tiny files written in the exact formats of data that is not available offline."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from cfs.data import DATASETS, dataset_options, load_dataset
from cfs.data import sources
from cfs.errors import CfsError


def _refuse_to_decode(path):
    raise AssertionError(f"decoded {path} although the cache should have served it")


# ---------------------------------------------------------------- CIFAR-10 (real JPEG archive)


@pytest.fixture(scope="module")
def cifar10(cifar10_root: Path):
    return load_dataset("cifar10", root=cifar10_root)


def test_cifar10_jpeg_archive_is_complete_and_in_standard_order(cifar10):
    assert cifar10.name == "cifar10"
    assert cifar10.train.x.shape == (50_000, 3, 32, 32)
    assert cifar10.test.x.shape == (10_000, 3, 32, 32)
    assert cifar10.train.x.dtype == torch.uint8 and cifar10.train.y.dtype == torch.int64
    assert cifar10.train.class_names == list(sources.CIFAR10_CLASSES)
    assert cifar10.train.class_names[0] == "airplane" and cifar10.train.class_names[9] == "truck"
    assert cifar10.train.y.bincount().tolist() == [5000] * 10
    assert cifar10.test.y.bincount().tolist() == [1000] * 10
    assert cifar10.mean == sources.CIFAR10_STATS[0] and cifar10.std == sources.CIFAR10_STATS[1]
    # Decoded pixels match the published statistics: RGB order and decoding are right.
    mean, std = sources.channel_stats(cifar10.train.x)
    assert np.allclose(mean, sources.CIFAR10_STATS[0], atol=0.005)
    assert np.allclose(std, sources.CIFAR10_STATS[1], atol=0.01)


def test_cifar10_second_load_comes_from_cache(cifar10, cifar10_root, monkeypatch):
    monkeypatch.setattr(sources, "decode_file", _refuse_to_decode)
    for root in (cifar10_root, cifar10_root / "cifar10-jpg"):  # both accepted layouts
        again = load_dataset("cifar10", root=root)
        assert torch.equal(again.train.x, cifar10.train.x)
        assert torch.equal(again.test.y, cifar10.test.y)
        assert again.train.class_names == cifar10.train.class_names


# ---------------------------------------------------------------- CIFAR pickles (generated)


def test_generated_cifar100_loads_with_right_labels(tmp_path, monkeypatch, write_cifar_pickles):
    spec = torchvision.datasets.CIFAR100
    write_cifar_pickles(tmp_path, spec, n_classes=100, per_class=2)
    split = load_dataset("cifar100", root=tmp_path)
    assert split.train.x.shape == (200, 3, 32, 32) and split.test.x.shape == (200, 3, 32, 32)
    assert split.train.class_names[7] == "name007" and split.num_classes == 100
    assert torch.equal(split.train.x[:, 0, 0, 0].long(), split.train.y)
    assert torch.equal(split.test.x[:, 2, 31, 31].long(), split.test.y)
    assert split.mean == sources.CIFAR100_STATS[0]
    # torchvision's own class reads the same files the same way (md5 check bypassed).
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    reference = spec(str(tmp_path), train=True)
    assert np.array_equal(reference.data.transpose(0, 3, 1, 2), split.train.x.numpy())
    assert reference.targets == split.train.y.tolist() and reference.classes[7] == "name007"


def test_cifar10_pickles_take_precedence(tmp_path, write_cifar_pickles):
    write_cifar_pickles(tmp_path, torchvision.datasets.CIFAR10, n_classes=10, per_class=1)
    split = load_dataset("cifar10", root=tmp_path)
    assert len(split.train) == 50 and len(split.test) == 10
    assert torch.equal(split.train.x[:, 1, 5, 5].long(), split.train.y)


# ---------------------------------------------------------------- MNIST family (idx files)


def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    if not (sources.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("apt-get install -y dataset-fashion-mnist to run this test")
    monkeypatch.setenv("CFS_DATA_ROOT", str(tmp_path))  # empty: only Debian's copy is found
    split = load_dataset("fashion-mnist")
    assert split.train.x.shape == (60_000, 1, 28, 28) and split.test.x.shape == (10_000, 1, 28, 28)
    assert split.train.x.dtype == torch.uint8
    assert split.train.class_names == torchvision.datasets.FashionMNIST.classes
    assert split.train.y.bincount().tolist() == [6000] * 10
    assert split.test.y.bincount().tolist() == [1000] * 10
    mean, std = sources.channel_stats(split.train.x)
    assert abs(mean[0] - 0.2860) < 0.001 and abs(std[0] - 0.3530) < 0.001
    # The same files in torchvision's layout, given as an explicit root, load identically.
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in sources.DEBIAN_FASHION_MNIST.glob("*.gz"):
        (raw / f.name).symlink_to(f)
    again = load_dataset("fashion-mnist", root=tmp_path / "tv")
    assert torch.equal(again.test.x, split.test.x) and torch.equal(again.train.y, split.train.y)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_mnist_torchvision_layout_unzipped_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    split = load_dataset("mnist", root=tmp_path)
    assert split.train.x.shape == (12, 1, 28, 28) and split.test.y.tolist() == [0, 1, 2, 3, 4]
    assert split.mean == sources.MNIST_STATS[0] and split.train.class_names[0] == "0 - zero"
    # Same parse as torchvision's reader.
    expected = torchvision.datasets.mnist.read_image_file(str(raw / "train-images-idx3-ubyte"))
    assert torch.equal(split.train.x[:, 0], expected)


def test_corrupt_idx_file_is_a_cfs_error(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(CfsError, match="not a uint8 idx file"):
        sources.read_idx(bad)


# ---------------------------------------------------------------- digits, synthetic


def test_digits_fixed_stratified_split():
    split = load_dataset("digits")
    assert split.train.x.shape == (1257, 1, 8, 8) and split.test.x.shape == (540, 1, 8, 8)
    assert split.train.x.dtype == torch.uint8 and int(split.train.x.max()) == 255
    per_class = torch.cat([split.train.y, split.test.y]).bincount()
    assert (split.test.y.bincount() - 0.3 * per_class).abs().max() <= 1  # stratified 30 %
    mean, std = sources.channel_stats(split.train.x)
    assert split.mean == mean and split.std == std and 0.2 < mean[0] < 0.4
    assert torch.equal(load_dataset("digits").test.x, split.test.x)  # fixed split


def test_synthetic_is_deterministic_learnable_and_shaped():
    a = load_dataset("synthetic", seed=3, n_classes=5, n_train_per_class=40, shape=(3, 4, 4))
    b = load_dataset("synthetic", seed=3, n_classes=5, n_train_per_class=40, shape=(3, 4, 4))
    other = load_dataset("synthetic", seed=4, n_classes=5, n_train_per_class=40, shape=(3, 4, 4))
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, other.train.x)
    assert a.train.x.shape == (200, 3, 4, 4) and a.train.x.dtype == torch.float32
    assert a.mean == (0.0, 0.0, 0.0) and a.std == (1.0, 1.0, 1.0) and a.num_classes == 5
    # Nearest class mean of the train part classifies the test part well.
    flat_train, flat_test = a.train.x.flatten(1), a.test.x.flatten(1)
    centroids = torch.stack([flat_train[a.train.y == k].mean(0) for k in range(5)])
    predicted = torch.cdist(flat_test, centroids).argmin(1)
    assert (predicted == a.test.y).float().mean() > 0.9


# ---------------------------------------------------------------- user mistakes


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("imagefolder", "train"),
    ],
)
def test_missing_data_is_a_one_line_error_naming_the_path(tmp_path, name, expected):
    with pytest.raises(CfsError) as info:
        load_dataset(name, root=tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / expected) in message
    if name != "imagefolder":
        assert "--download" in message


def test_other_image_folder_in_root_is_not_taken_for_cifar10(tmp_path):
    for part in ("train", "test"):
        (tmp_path / part / "cat").mkdir(parents=True)
    with pytest.raises(CfsError, match="CIFAR-10 not found"):
        load_dataset("cifar10", root=tmp_path)


def test_default_root_is_env_then_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CFS_DATA_ROOT", str(tmp_path / "env"))
    with pytest.raises(CfsError, match=str(tmp_path / "env" / "cifar-100-python")):
        load_dataset("cifar100")
    monkeypatch.delenv("CFS_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CfsError, match="data/cifar-100-python"):
        load_dataset("cifar100")


def test_unknown_name_and_option_are_cfs_errors():
    with pytest.raises(CfsError, match="did you mean: cifar10"):
        load_dataset("cifar11")
    with pytest.raises(CfsError, match="no option image_size .*valid: none"):
        load_dataset("digits", image_size=32)
    assert dataset_options("imagefolder") == {"image_size": None}
    assert set(DATASETS) >= {"digits", "synthetic", "cifar10", "cifar100", "mnist",
                             "fashion-mnist", "imagefolder"}
