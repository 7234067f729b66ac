"""``--image-size N`` decodes image-file data sets at N x N (images of mixed sizes become one
tensor); a data set of fixed size refuses it with one line before any work."""

from __future__ import annotations

import json

import torch
from torchvision.io import write_png

from cfs.cli import main


def image_folder(root, sizes=(12, 20)):
    g = torch.Generator().manual_seed(0)
    for part in ("train", "test"):
        for c in range(10):
            folder = root / part / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4 if part == "train" else 2):
                size = sizes[i % len(sizes)]
                img = (torch.rand(3, size, size, generator=g) * 255).to(torch.uint8)
                write_png(img, str(folder / f"{i}.png"))
    return root


def test_mixed_sizes_need_image_size_which_resizes(tmp_path, capsys):
    root = image_folder(tmp_path / "data")
    common = ["bench", "--scenario", "split-imagefolder", "--data-root", str(root), "--strategy", "finetune",
              "--backbone", "mlp", "--epochs", "1", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main([*common, "--image-size", "16", "--out", str(tmp_path / "b")]) == 0
    info = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert info["kind"] == "class-incremental"
    config = (tmp_path / "b" / "config.yaml").read_text()
    assert "image_size: 16" in config


def test_fixed_size_data_set_refuses_image_size(tmp_path, capsys):
    assert main(["bench", "--strategy", "finetune", "--image-size", "16", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "has a fixed size" in lines[0]
    assert not (tmp_path / "run").exists()
