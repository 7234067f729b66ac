"""A third-party package installed with pip is found through its entry point, runs, and does
what it claims: Weight Aligning leaves old- and new-class head rows with equal mean norms."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cfs.config import resolve
from cfs.engine.runner import run_strategy
from cfs.plugins import get_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cfs-example-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder the example package was pip-installed into (with its entry-point metadata)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    return target


@pytest.fixture(scope="module")
def installed(site):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def _cfs(env, *args):
    return subprocess.run([sys.executable, "-m", "cfs", *args], env=env, capture_output=True, text=True)


def test_plugin_is_listed_with_its_distribution(installed):
    out = _cfs(installed, "plugins")
    assert out.returncode == 0, out.stderr
    assert "weight-align (cfs-example-plugin" in out.stdout and "strategy weight-align" in out.stdout


def test_plugin_runs_through_bench_and_aligns_norms(installed, tmp_path):
    out = _cfs(installed, "bench", "--strategy", "weight-align", "--strategy", "finetune", "--epochs", "3",
               "--out", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    wa = json.loads((tmp_path / "weight-align" / "metrics.json").read_text())["summary"]
    ft = json.loads((tmp_path / "finetune" / "metrics.json").read_text())["summary"]
    # aligning the new-class weights to the old ones' norm can only reduce the recency bias
    assert wa["last_accuracy"] >= ft["last_accuracy"]


def test_autoload_disabled_hides_it_and_no_blocks_it(installed):
    env = dict(installed, CFS_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "weight-align" not in _cfs(env, "list").stdout
    assert "weight-align" not in _cfs(installed, "list", "-p", "no:weight-align").stdout
    assert "weight-align" in _cfs(installed, "list").stdout


def _old_and_new_norms(pm, spec: str) -> tuple[float, float, object]:
    """Mean L2 norm of the old-class and of the last experience's head rows after a
    split-digits run of ``spec`` (5 x 2 classes, MLP), and the run's strategy instance."""
    factory = pm.scenarios.get("split-digits")
    cfg = resolve(factory.defaults, {"epochs": 3, "seed": 0, "device": "cpu", "strategies": [spec]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_strategy(pm, cfg, spec, factory(cfg), progress=False)
    finally:
        torch.set_num_threads(threads)
    norms = result.state.model.head.weight.detach().norm(dim=1)
    n_old = len(norms) - len(result.state.experience.classes)
    assert n_old == 8  # four old experiences of two classes, then the last two
    return float(norms[:n_old].mean()), float(norms[n_old:].mean()), result.state.strategies[0]


def test_weight_align_equalises_old_and_new_head_norms(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    pm = get_plugin_manager()
    assert pm.strategies.entry("weight-align").plugin == "weight-align"  # found through its entry point
    old, new, strategy = _old_and_new_norms(pm, "weight-align")
    assert new == pytest.approx(old, rel=1e-5)  # the claim: aligned right after the last experience
    assert strategy.n_old == 8 and abs(strategy.last_gamma - 1) > 0.05  # and it did rescale them
    # without the plugin, fine-tuning leaves the two groups' norms far apart (here the old rows,
    # pushed down on every new-class batch, end up larger; the paper saw the new ones larger)
    old_ft, new_ft, _ = _old_and_new_norms(pm, "finetune")
    assert abs(new_ft / old_ft - 1) > 0.1
