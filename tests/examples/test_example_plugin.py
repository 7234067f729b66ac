"""A third-party package installed with pip is found through its entry point and runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cfs-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    return env


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
