"""The named class-incremental protocols on real data, as a user runs them."""

import json
from pathlib import Path

import pytest
import torch
import torchvision

from cfs.cli import main
from cfs.config import resolve
from cfs.plugins import get_plugin_manager

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _bench(tmp_path, *args):
    out = tmp_path / "runs"
    code = main(["bench", *args, "--strategy", "finetune", "--strategy", "joint", "--out", str(out), "--no-progress"])
    assert code == 0
    return {s: json.loads((out / s / "metrics.json").read_text()) for s in ("finetune", "joint")}


def test_split_cifar10_on_the_real_archive(cifar10_root, tmp_path, capsys):
    res = _bench(tmp_path, "--scenario", "split-cifar10", "--data-root", str(cifar10_root),
                 "--backbone", "mlp", "--epochs", "2", "--batch-size", "128", "--lr", "0.01",
                 "--max-train-per-class", "500")
    assert "split-cifar10" in capsys.readouterr().out
    ft, joint = res["finetune"], res["joint"]
    assert len(ft["accuracy_matrix"]) == 5
    assert json.loads((tmp_path / "runs" / "joint" / "run.json").read_text())["scenario"]["train_sizes"] == [1000] * 5
    # fine-tuning keeps only the last two classes; joint training keeps them all
    assert max(ft["accuracy_matrix"][-1][:-1]) < 0.1
    assert joint["summary"]["last_accuracy"] > ft["summary"]["last_accuracy"] + 0.1


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (CI installs it)")
def test_split_fashion_mnist_on_the_debian_files(tmp_path):
    res = _bench(tmp_path, "--scenario", "split-fashion-mnist", "--epochs", "1", "--max-train-per-class", "1000")
    assert res["finetune"]["summary"]["forgetting"] > 0.5
    assert res["joint"]["summary"]["last_accuracy"] > 0.7


def test_split_cifar100_uses_the_seed_1993_order(tmp_path, write_cifar_pickles):
    write_cifar_pickles(tmp_path, torchvision.datasets.CIFAR100, n_classes=100, per_class=2)
    pm = get_plugin_manager()
    cfg = resolve({"scenario": "split-cifar100", "data_root": str(tmp_path)})
    scenario = pm.scenarios.get("split-cifar100")(cfg)
    assert len(scenario.experiences) == 10
    assert scenario.class_order[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    for exp in scenario.experiences:
        original = exp.train.x[:, 0, 0, 0].long()  # the fake images carry their original label
        expected = torch.tensor(scenario.class_order)[exp.train.y]
        assert torch.equal(original, expected)
        assert set(exp.train.y.tolist()) == set(range(10 * exp.index, 10 * exp.index + 10))
    assert scenario.transform.crop_padding == 4 and scenario.transform.flip
    assert scenario.transform.mean == (0.5071, 0.4867, 0.4408)
