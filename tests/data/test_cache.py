"""The decoded-data cache: served without decoding, rebuilt when the source or options change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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


def test_changed_file_rebuilds_and_replaces_the_stale_entry(png, folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    png(folder / "train" / "dog" / "2.png", 77)  # new content, other size
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


def test_added_file_and_other_options_get_their_own_entry(png, folder, cache_dir, decodes):
    load_dataset("imagefolder", root=folder)
    resized = load_dataset("imagefolder", root=folder, image_size=4)
    assert resized.train.x.shape == (6, 3, 4, 4) and len(decodes) == 16
    png(folder / "train" / "cat" / "9.png", 50)
    assert len(load_dataset("imagefolder", root=folder).train) == 7


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("cfs: warning:")]


def test_corrupt_entry_is_rebuilt(folder, cache_dir, decodes, capsys):
    load_dataset("imagefolder", root=folder)
    (entry,) = cache_dir.iterdir()
    entry.write_bytes(b"garbage")
    again = load_dataset("imagefolder", root=folder)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "damaged" in err and str(entry) in err
    assert len(again.train) == 6 and len(decodes) == 16


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_entry_fails_its_checksum_and_is_rebuilt(folder, cache_dir, decodes, capsys, damage):
    """A truncated entry, or one with a changed pixel that ``torch.load`` still reads, is
    caught by the recorded checksum: one warning line, the pixels decoded again, entry rewritten."""
    first = load_dataset("imagefolder", root=folder)
    (entry,) = cache_dir.iterdir()
    raw = bytearray(entry.read_bytes())
    if damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    else:
        # the stored train pixels are 6x3x6x6 bytes 0,0,..,1,1,..: find that run and change one
        needle = bytes(first.train.x.contiguous().view(-1).tolist())
        at = raw.find(needle)
        assert at > 0
        raw[at + 5] ^= 0xFF
        entry.write_bytes(raw)
        payload = torch.load(entry, weights_only=True)  # still a loadable file ...
        assert payload["sha256"] != cache.checksum(payload)  # ... whose content no longer matches
    capsys.readouterr()
    again = load_dataset("imagefolder", root=folder)
    warnings = _warnings(capsys.readouterr().err)
    assert len(warnings) == 1 and "rebuilding" in warnings[0] and str(entry) in warnings[0]
    assert len(decodes) == 16 and torch.equal(again.train.x, first.train.x)
    load_dataset("imagefolder", root=folder)  # the rebuilt entry is sound: no warning, no decode
    assert _warnings(capsys.readouterr().err) == [] and len(decodes) == 16


def test_entry_records_the_checksum_of_its_content(folder, cache_dir):
    load_dataset("imagefolder", root=folder)
    (entry,) = cache_dir.iterdir()
    payload = torch.load(entry, weights_only=True)
    assert len(payload["sha256"]) == 64 and payload["sha256"] == cache.checksum(payload)
    payload["train_y"][0] = 1  # any change to what is stored changes the checksum
    assert payload["sha256"] != cache.checksum(payload)


def test_mixed_sizes_need_image_size(png, folder, cache_dir):
    png(folder / "train" / "cat" / "big.png", 5, size=9)
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
