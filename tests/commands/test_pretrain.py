"""``cfs pretrain`` and the small ViTs: a checkpoint it writes is what ``--weights`` loads."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.io import write_png

from cfs.cli import main
from cfs.models.backbones import build_backbone
from cfs.plugins import get_plugin_manager


def image_folder(root, classes: int = 10, per_class: int = 3, size: int = 16):
    """``root/{train,test}/<class>/*.png``: classes differ in mean colour (learnable)."""
    g = torch.Generator().manual_seed(0)
    for part in ("train", "test"):
        for c in range(classes):
            folder = root / part / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                base = torch.tensor([c % 3, (c // 3) % 3, c % 2], dtype=torch.float).view(3, 1, 1) * 100
                img = (base + torch.rand(3, size, size, generator=g) * 50).clamp(0, 255).to(torch.uint8)
                write_png(img, str(folder / f"{i}.png"))
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    folder = image_folder(root / "images")
    ckpt = root / "vit.pt"
    rc = main(["pretrain", "--backbone", "vit-tiny", "--data", "imagefolder", "--data-root", str(folder),
               "--image-size", "16", "--epochs", "2", "--batch-size", "16", "--val-fraction", "0.2",
               "--out", str(ckpt), "--threads", "1"])
    assert rc == 0
    return folder, ckpt


def test_vit_tiny_reloads_the_pretrained_weights_exactly(pretrained):
    _, ckpt = pretrained
    saved = torch.load(ckpt, weights_only=True)
    assert saved["backbone"] == "vit-tiny" and saved["image_size"] == 16 and len(saved["classes"]) == 10
    pm = get_plugin_manager()
    net = build_backbone(pm.backbones, "vit-tiny", in_channels=3, image_size=16, weights=str(ckpt))
    state = net.state_dict()
    assert state.keys() == saved["state_dict"].keys()
    assert all(torch.equal(state[k], saved["state_dict"][k]) for k in state)
    assert net.input_norm == (tuple(saved["mean"]), tuple(saved["std"]))  # runs normalise as in training
    fresh = build_backbone(pm.backbones, "vit-tiny", in_channels=3, image_size=16)
    assert not torch.equal(fresh.state_dict()["model.pos_embed"], state["model.pos_embed"])  # random init without
    assert fresh.out_dim == 192 and fresh.model.patch_embed.patch_size == (2, 2)  # 8 x 8 patches at 16 px


def test_bench_runs_a_strategy_on_the_pretrained_vit(pretrained, tmp_path):
    folder, ckpt = pretrained
    out = tmp_path / "run"
    assert main(["bench", "--scenario", "split-imagefolder", "--data-root", str(folder), "--backbone", "vit-tiny",
                 "--weights", str(ckpt), "--strategy", "ranpac", "-o", "ranpac.m=256", "--image-size", "16",
                 "--no-progress", "--out", str(out)]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["accuracy_matrix"]) == 5


@pytest.mark.parametrize("argv,msg", [
    (["--backbone", "vit-tny"], "did you mean: vit-tiny"),
    (["--data-root", "/nonexistent/minis"], "no such folder"),
    (["--data", "mini-imagenett"], "unknown data set"),
    (["--epochs", "0"], "at least 1"),
    (["--lr", "-1"], "--lr must be >= 0"),
])
def test_pretrain_user_errors_are_one_line_before_work(argv, msg, tmp_path, capsys):
    out = tmp_path / "w.pt"
    assert main(["pretrain", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfs: error:") and msg in err and "\n" not in err
    assert not out.exists()


def test_pretrain_refuses_an_out_it_cannot_write(tmp_path, capsys):
    for out, msg in ((tmp_path / "missing" / "w.pt", "does not exist"), (tmp_path, "is a folder")):
        assert main(["pretrain", "--out", str(out)]) == 2
        assert msg in capsys.readouterr().err


def test_bench_weights_and_pretrained_errors_name_the_backbone(tmp_path, capsys):
    w = tmp_path / "w.pt"
    w.write_bytes(b"x")
    assert main(["bench", "--backbone", "mlp", "--weights", str(w), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "cannot load a local checkpoint" in capsys.readouterr().err
    assert main(["bench", "--backbone", "vit-tiny", "--pretrained", "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "has no pretrained weights" in capsys.readouterr().err


def test_init_continues_from_a_checkpoint_and_records_it(pretrained, tmp_path):
    folder, ckpt = pretrained
    out = tmp_path / "more.pt"
    # lr 0: the weights written are exactly the ones it started from
    assert main(["pretrain", "--backbone", "vit-tiny", "--data", "imagefolder", "--data-root", str(folder),
                 "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--lr", "0", "--init", str(ckpt),
                 "--out", str(out), "--threads", "1"]) == 0
    before, after = torch.load(ckpt, weights_only=True), torch.load(out, weights_only=True)
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["epochs"] == before["epochs"] + 1
    assert after["init"] == {"path": str(ckpt), "epochs": before["epochs"], "held_out_accuracy": before["held_out_accuracy"]}


@pytest.mark.parametrize("extra,msg", [
    (["--image-size", "32"], "holds vit-tiny at 16 px; this run trains vit-tiny at 32 px"),
    (["--backbone", "vit-small"], "holds vit-tiny at 16 px; this run trains vit-small"),
])
def test_init_from_another_backbone_or_size_is_one_line_before_work(pretrained, extra, msg, tmp_path, capsys):
    folder, ckpt = pretrained
    out = tmp_path / "x.pt"
    argv = ["pretrain", "--backbone", "vit-tiny", "--data", "imagefolder", "--data-root", str(folder),
            "--image-size", "16", "--init", str(ckpt), "--out", str(out)]
    for flag, value in zip(extra[::2], extra[1::2]):
        argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and not out.exists()


def test_init_that_is_not_a_file_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--init", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
