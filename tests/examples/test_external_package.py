"""A second third-party package, written here from the public contract only (CONTRIBUTING.md):
tested in-process with :mod:`cfs.testing`, then pip-installed and run through ``cfs bench``
by its entry point, with no change to the core."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cfs import testing

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cfs-probe-replay"
version = "0.1.0"

[project.entry-points.cfs]
probe-replay = "cfs_probe_replay"

[tool.setuptools]
packages = ["cfs_probe_replay"]
package-dir = {"" = "src"}
"""

MODULE = '''
"""Rehearsal with a random class-balanced memory, built on cfs's public core only."""

from dataclasses import dataclass

from cfs import hookimpl
from cfs.memory import ClassBalancedMemory, store_experience
from cfs.strategy import Strategy


@dataclass
class ProbeOptions:
    budget: int = 100


class ProbeReplay(Strategy):
    """Joins a random class-balanced memory to every experience's training data."""

    name = "probe-replay"
    Options = ProbeOptions

    def __init__(self, options=None):
        super().__init__(options)
        self.memory = ClassBalancedMemory(self.options.budget, selection="reservoir")

    @hookimpl
    def cfs_before_training_exp(self, state):
        state.join_train_data(self.memory.dataset())

    @hookimpl
    def cfs_after_training_exp(self, state):
        store_experience(self.memory, state)

    def state_dict(self):
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state):
        self.memory.load_state_dict(state["memory"])


@hookimpl
def cfs_add_strategies(registry):
    registry.add(ProbeReplay)
'''


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cfs-probe-replay")
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (root / "src" / "cfs_probe_replay").mkdir(parents=True)
    (root / "src" / "cfs_probe_replay" / "__init__.py").write_text(MODULE)
    return root


@pytest.fixture(scope="module")
def module(package):
    spec = importlib.util.spec_from_file_location("cfs_probe_replay", package / "src" / "cfs_probe_replay" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_package_learns_and_composes_in_process(module):
    ft = testing.final_accuracy(testing.run("finetune", epochs=3))
    probe = testing.run("probe-replay", plugins=[module], epochs=3)
    assert testing.final_accuracy(probe) >= ft + 0.3
    both = [testing.run(spec, plugins=[module], epochs=2, seed=1) for spec in ("probe-replay+lwf", "lwf+probe-replay")]
    assert both[0].state.results.rows == both[1].state.results.rows


def test_installed_package_runs_through_cfs_bench(package, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "cfs", "bench", "--strategy", "probe-replay+lwf", "--epochs", "2",
                           "--no-progress", "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "probe-replay+lwf" and metrics["summary"]["last_accuracy"] > 0.5
