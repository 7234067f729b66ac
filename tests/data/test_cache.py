"""The decoded-data cache: served without decoding, rebuilt when the source or options change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from cfs.data import cache, load_dataset, sources
from cfs.errors import CfsError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CFS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch) -> list[Path]:
    """The files the loader decodes, in order (the real decoder still runs)."""
    seen: list[Path] = []
    real = sources.decode_file

    def counting(path: Path) -> torch.Tensor:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(sources, "decode_file", counting)
    return seen


def _png(path: Path, value: int, size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """A tiny image folder: 2 classes, 3 train + 1 test image each, lossless PNG."""
    root = tmp_path / "images"
    for k, cls in enumerate(["cat", "dog"]):
        for i in range(3):
            _png(root / "train" / cls / f"{i}.png", 10 * k + i)
        _png(root / "test" / cls / "0.png", 100 + k)
    return root


def test_second_load_is_identical_and_does_not_decode(folder, cache_dir, decodes, monkeypatch):
    first = load_dataset("imagefolder", root=folder)
    assert len(decodes) == 8 and first.train.class_names == ["cat", "dog"]
    assert first.train.y.tolist() == [0, 0, 0, 1, 1, 1] and first.test.x[1, 0, 0, 0] == 101
    monkeypatch.setattr(sources, "decode_file", lambda p: pytest.fail(f"decoded {p}"))
    second = load_dataset("imagefolder", root=folder)
    for part in ("train", "test"):
        assert torch.equal(getattr(first, part).x, getattr(second, part).x)
        assert torch.equal(getattr(first, part).y, getattr(second, part).y)
    assert (second.name, second.mean, second.std) == (first.name, first.mean, first.std)
    assert [p.suffix for p in cache_dir.iterdir()] == [".pt"]  # no temp file left behind


def test_changed_file_rebuilds_and_replaces_the_stale_entry(folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    _png(folder / "train" / "dog" / "2.png", 77)  # new content, other size
    rebuilt = load_dataset("imagefolder", root=folder)
    assert len(decodes) == 16 and rebuilt.train.x[5, 0, 0, 0] == 77
    assert len(list(cache_dir.iterdir())) == 1


def test_mtime_alone_invalidates(folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    target = folder / "test" / "cat" / "0.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    load_dataset("imagefolder", root=folder)
    assert len(decodes) == 16


def test_added_file_and_other_options_get_their_own_entry(folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    resized = load_dataset("imagefolder", root=folder, image_size=4)
    assert resized.train.x.shape == (6, 3, 4, 4) and len(decodes) == 16
    _png(folder / "train" / "cat" / "9.png", 50)
    assert len(load_dataset("imagefolder", root=folder).train) == 7


def test_corrupt_entry_is_rebuilt(folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = load_dataset("imagefolder", root=folder)
    assert len(again.train) == 6 and len(decodes) == 16


def test_mixed_sizes_need_image_size(folder, cache_dir):
    _png(folder / "train" / "cat" / "big.png", 5, size=9)
    with pytest.raises(CfsError, match="differ in size .*image_size") as info:
        load_dataset("imagefolder", root=folder)
    assert "\n" not in str(info.value)
    assert load_dataset("imagefolder", root=folder, image_size=8).train.x.shape == (7, 3, 8, 8)


def test_fingerprint_counts_files_bytes_and_newest_mtime(folder):
    fp = cache.fingerprint(folder / "train")
    files = list((folder / "train").rglob("*.png"))
    assert fp["files"] == 6 and fp["bytes"] == sum(f.stat().st_size for f in files)
    assert fp["mtime_ns"] >= max(f.stat().st_mtime_ns for f in files)


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CFS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "cfs"
