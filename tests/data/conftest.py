"""A tiny image folder for the data-loading tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def write_png(path: Path, value: int, size: int = 6) -> None:
    """A lossless ``size`` x ``size`` grey PNG filled with ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)


@pytest.fixture
def png():
    return write_png


@pytest.fixture
def folder(tmp_path) -> Path:
    """2 classes, 3 train + 1 test image each, lossless PNG."""
    root = tmp_path / "images"
    for k, cls in enumerate(["cat", "dog"]):
        for i in range(3):
            write_png(root / "train" / cls / f"{i}.png", 10 * k + i)
        write_png(root / "test" / cls / "0.png", 100 + k)
    return root
