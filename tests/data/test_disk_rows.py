"""Images larger than memory: decoded once to a flat uint8 file, read back in batches.

``CFS_IN_MEMORY_MAX_BYTES=0`` makes every decoded array "too large for memory", so the tiny
image folders here take the on-disk path end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cfs.cli import main
from cfs.data import ArrayDataset, load_dataset
from cfs.data.diskrows import DiskArray, LazyRows


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CFS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def on_disk(monkeypatch):
    monkeypatch.setenv("CFS_IN_MEMORY_MAX_BYTES", "0")


def noise_folder(root, classes=10, train=6, test=2, size=8):
    """Random-noise lossless PNGs; returns the pixels of every file by path."""
    g = np.random.default_rng(0)
    pixels = {}
    for part, n in (("train", train), ("test", test)):
        for c in range(classes):
            for i in range(n):
                path = root / part / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img = g.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(path)
                pixels[path] = torch.from_numpy(img).permute(2, 0, 1)
    return pixels


def test_decoded_file_round_trips_every_pixel_and_views_are_indices(tmp_path, cache_dir, on_disk):
    pixels = noise_folder(tmp_path / "images")
    data = load_dataset("imagefolder", root=tmp_path / "images")
    assert isinstance(data.train.x, LazyRows) and data.train.x.shape == (60, 3, 8, 8)
    expected = torch.stack([pixels[p] for p in sorted(p for p in pixels if p.parts[-3] == "train")])
    assert torch.equal(data.train.x[:], expected)  # exact pixels, in label then file order
    files = sorted(p.name.split(".", 1)[1] for p in cache_dir.iterdir())
    assert files == ["pt", "test.u8", "train.u8"]  # one entry: metadata and two pixel files
    # a class subset (an experience) is a view: the same file, an index vector, no pixels
    exp = data.train.with_classes([2, 7])
    assert exp.x.sources[0] is data.train.x.sources[0] and len(exp) == 12
    assert torch.equal(exp.x[:], expected[torch.isin(data.train.y, torch.tensor([2, 7]))])
    # the second load reads the entry: still on disk, same pixels
    again = load_dataset("imagefolder", root=tmp_path / "images")
    assert isinstance(again.train.x, LazyRows) and torch.equal(again.train.x[:], expected)
    assert (again.mean, again.std) == (data.mean, data.std)


def test_small_enough_files_load_into_memory(tmp_path, cache_dir, on_disk, monkeypatch):
    noise_folder(tmp_path / "images", classes=2)
    first = load_dataset("imagefolder", root=tmp_path / "images")
    monkeypatch.setenv("CFS_IN_MEMORY_MAX_BYTES", str(10**9))  # another, larger machine
    again = load_dataset("imagefolder", root=tmp_path / "images")
    assert isinstance(again.train.x, torch.Tensor) and torch.equal(again.train.x, first.train.x[:])


def test_damaged_pixel_file_is_rebuilt(tmp_path, cache_dir, on_disk, capsys):
    noise_folder(tmp_path / "images", classes=2)
    expected = load_dataset("imagefolder", root=tmp_path / "images").train.x[:]
    (pixels,) = cache_dir.glob("*.train.u8")
    raw = bytearray(pixels.read_bytes())
    raw[10] ^= 0xFF
    pixels.write_bytes(raw)
    capsys.readouterr()
    again = load_dataset("imagefolder", root=tmp_path / "images")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cfs: warning:")]
    assert len(err) == 1 and "checksum" in err[0]
    assert torch.equal(again.train.x[:], expected)


def test_rows_are_read_ahead_along_a_permutation(tmp_path):
    x = torch.randint(0, 256, (100, 3, 4, 4), dtype=torch.uint8)
    path = tmp_path / "rows.u8"
    path.write_bytes(x.numpy().tobytes())
    rows = LazyRows.of(DiskArray(path, 100, (3, 4, 4)))
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    for start in range(0, 100, 16):
        assert torch.equal(rows[order[start:start + 16]], x[order[start:start + 16]])
    assert rows.read_ahead_hits == 6  # every batch after the first came from the read-ahead
    other = torch.randperm(100)  # a new permutation: nothing stale is served
    assert torch.equal(rows[other[:16]], x[other[:16]])
    assert torch.equal(rows[torch.tensor([5, 5, 0])], x[[5, 5, 0]]) and torch.equal(rows[-1], x[99])


def test_a_memory_joined_to_rows_on_disk_is_a_view_of_both(tmp_path):
    x = torch.arange(40, dtype=torch.uint8).view(10, 1, 2, 2)
    path = tmp_path / "rows.u8"
    path.write_bytes(x.numpy().tobytes())
    disk = ArrayDataset(LazyRows.of(DiskArray(path, 10, (1, 2, 2))), torch.arange(10) % 3)
    memory = ArrayDataset(torch.full((3, 1, 2, 2), 200, dtype=torch.uint8), torch.tensor([0, 1, 2]))
    joined = ArrayDataset.concat([disk.with_classes([1]), memory])
    assert isinstance(joined.x, LazyRows) and joined.y.tolist() == [1, 1, 1, 0, 1, 2]
    assert torch.equal(joined.x[torch.tensor([4, 0, 2])], torch.stack([memory.x[1], x[1], x[7]]))


def test_training_on_rows_on_disk_gives_the_in_memory_results(tmp_path, monkeypatch):
    noise_folder(tmp_path / "images", classes=10, train=8, test=3)
    common = ["bench", "--scenario", "split-imagefolder", "--data-root", str(tmp_path / "images"),
              "--strategy", "replay", "-o", "replay.budget=20", "--backbone", "mlp", "--epochs", "2",
              "--batch-size", "16", "--no-progress", "--device", "cpu"]
    results = {}
    for where, limit in (("memory", str(10**9)), ("disk", "0")):
        monkeypatch.setenv("CFS_CACHE_DIR", str(tmp_path / f"cache-{where}"))
        monkeypatch.setenv("CFS_IN_MEMORY_MAX_BYTES", limit)
        assert main([*common, "--out", str(tmp_path / where)]) == 0
        results[where] = json.loads((tmp_path / where / "metrics.json").read_text())
    assert list((tmp_path / "cache-disk").glob("*.u8")) and not list((tmp_path / "cache-memory").glob("*.u8"))
    assert results["disk"]["accuracy_matrix"] == results["memory"]["accuracy_matrix"]
