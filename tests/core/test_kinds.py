"""Scenario kinds and subcommands are registered, not spelled: a third-party module loaded with
``-p`` adds a setting (its own loop, metrics, table, header and report section), a kind that
reuses the class-incremental loop, a scenario of each and a subcommand, with no core edit."""

from __future__ import annotations

import json
import textwrap

import pytest

from cfs.cli import main
from cfs.errors import CfsError
from cfs.plugins import get_plugin_manager

PLUGIN = textwrap.dedent('''
    import time

    import torch

    from cfs import hookimpl
    from cfs.engine.continual import Timings
    from cfs.kinds import ScenarioKind
    from cfs.scenarios.kinds import ClassIncremental
    from cfs.strategy import Strategy
    from cfs.testing import synthetic_stream


    class NearestMeanLoop:
        """One pass: class means of the (untrained) backbone's features, nearest-mean test."""

        def __init__(self, state, progress=True):
            self.state, self.timings = state, Timings()

        def run(self):
            s, t0 = self.state, time.perf_counter()
            exps = s.scenario.experiences
            feats = lambda x: s.model.features(s.prepare(x.to(s.device)))
            with torch.no_grad():
                f_tr, y_tr = feats(torch.cat([e.train.x for e in exps])), torch.cat([e.train.y for e in exps])
                f_te, y_te = feats(torch.cat([e.test.x for e in exps])), torch.cat([e.test.y for e in exps])
            means = torch.stack([f_tr[y_tr == c].mean(0) for c in range(s.scenario.num_classes)])
            s.extra["toy"] = float((torch.cdist(f_te, means).argmin(1) == y_te).float().mean())
            self.timings.train_seconds.append(time.perf_counter() - t0)
            return s


    class Toy(ScenarioKind):
        """Toy setting: nearest class mean of untrained features, one pass."""
        name = "toy"
        loop = NearestMeanLoop

        def metrics(self, result):
            return {"strategy": result.strategy, "scenario": result.state.scenario.name,
                    "summary": {"accuracy": result.state.extra["toy"]}, "time": {"total_seconds": result.seconds}}

        def write_files(self, folder, result, data):
            (folder / "toy.txt").write_text(f"{data['summary']['accuracy']:.6f}\\n")

        def header(self, scenario, cfg):
            return f"toy scenario {scenario.name}: {scenario.num_classes} classes, nearest class mean"


    class ToyStream(ClassIncremental):
        """Class-incremental loop and metrics, its own header."""
        name = "toy-stream"

        def header(self, scenario, cfg):
            return f"toy stream {scenario.name}: {len(scenario.experiences)} steps"


    class Idle(Strategy):
        """Trains nothing of its own (plain fine-tuning where the loop trains)."""
        name = "idle"
        compatibility = frozenset({"toy", "toy-stream"})


    class Blobs:
        """6 Gaussian blobs in 3 experiences."""
        defaults = {"epochs": 1, "batch_size": 8}

        def __init__(self, name, kind):
            self.name, self.kind = name, kind

        def __call__(self, cfg):
            return synthetic_stream(n_classes=6, n_experiences=3, per_class=20, test_per_class=10,
                                    name=self.name, kind=self.kind)


    class Hello:
        """Say hello and count the registered scenario kinds."""
        name = "hello"

        def add_parser(self, subparsers, parent):
            p = subparsers.add_parser(self.name, parents=[parent], help=self.__doc__)
            p.add_argument("--to", default="world")

        def run(self, args):
            print(f"hello {args.to}: {', '.join(args.plugin_manager.kinds)}")
            return 0


    @hookimpl
    def cfs_add_scenario_kinds(registry):
        registry.add(Toy())
        registry.add(ToyStream())


    @hookimpl
    def cfs_add_scenarios(registry):
        registry.add(Blobs("toy-blobs", "toy"))
        registry.add(Blobs("toy-stream-blobs", "toy-stream"))
        registry.add(Blobs("ti-blobs", "task-incremental"))  # a kind nobody registers


    @hookimpl
    def cfs_add_strategies(registry):
        registry.add(Idle)


    @hookimpl
    def cfs_add_commands(registry):
        registry.add(Hello())
''')


@pytest.fixture
def toy(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_toy_setting.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_toy_setting"


def test_first_party_kinds_are_registered():
    pm = get_plugin_manager()
    assert list(pm.kinds) == ["class-incremental", "episodic", "fscil", "online"]
    assert pm.kinds.entry("fscil").plugin == "kinds"
    assert pm.kinds.get("fscil").loop is pm.kinds.get("class-incremental").loop
    assert not pm.kinds.get("episodic").channels_last and pm.kinds.get("fscil").channels_last
    assert pm.kinds.get("online").loop is not pm.kinds.get("class-incremental").loop
    with pytest.raises(CfsError, match="unknown scenario kind 'task-incremental'"):
        pm.kinds.get("task-incremental")


def test_plugin_kind_runs_end_to_end(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "-p", toy, "--scenario", "toy-blobs", "--strategy", "idle", "--out", str(out),
                 "--no-progress", "--logger", "console", "--logger", "jsonl"]) == 0
    printed = capsys.readouterr().out.splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "toy" and metrics["strategy"] == "idle"
    assert metrics["summary"]["accuracy"] > 0.8  # well-separated blobs: the class means find them
    assert (out / "toy.txt").read_text() == f"{metrics['summary']['accuracy']:.6f}\n"
    assert json.loads((out / "run.json").read_text())["scenario"]["kind"] == "toy"
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]) == {"summary": metrics["summary"]}
    assert not (out / "accuracy_matrix.csv").exists()  # the class-incremental files are that kind's
    assert printed[0] == "toy scenario toy-blobs: 6 classes, nearest class mean"
    assert printed[1].split() == ["strategy", "accuracy", "time", "s"]  # the default table
    assert printed[3].split()[:2] == ["idle", f"{metrics['summary']['accuracy']:.4g}"]

    assert main(["report", "-p", toy, str(out), "--out", str(tmp_path / "report")]) == 0
    assert f"| idle | toy-blobs | {metrics['summary']['accuracy']:.4g} |" in capsys.readouterr().out


def test_kind_reusing_the_class_incremental_loop(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "-p", toy, "--scenario", "toy-stream-blobs", "--strategy", "idle", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("toy stream toy-stream-blobs: 3 steps\n") and "final acc %" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "toy-stream" and len(metrics["accuracy_matrix"]) == 3
    assert (out / "accuracy_matrix.csv").is_file() and (out / "eval_results.csv").is_file()


def test_strategy_compatibility_names_registered_kinds(toy, tmp_path, capsys):
    assert main(["bench", "-p", toy, "--scenario", "toy-blobs", "--strategy", "finetune",
                 "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    assert "does not support toy scenarios" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_unregistered_kind_is_one_line_before_any_work(toy, tmp_path, capsys):
    assert main(["bench", "-p", toy, "--scenario", "ti-blobs", "--strategy", "idle",
                 "--out", str(tmp_path / "never"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("cfs: error: scenario 'ti-blobs' has kind 'task-incremental', which no loaded plugin registers "
                   "(registered kinds: class-incremental, episodic, fscil, online, toy, toy-stream); "
                   "load the plugin that defines it with -p MODULE")
    assert not (tmp_path / "never").exists()


def test_plugin_subcommand(toy, capsys):
    assert main(["hello", "-p", toy, "--to", "cfs"]) == 0
    assert capsys.readouterr().out == "hello cfs: class-incremental, episodic, fscil, online, toy, toy-stream\n"
    assert main(["-p", toy, "hello"]) == 0  # -p before the subcommand is read too
    assert capsys.readouterr().out.startswith("hello world:")
    assert main(["hello"]) == 2  # without the plugin there is no such command: one line, exit 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err


def test_list_and_plugins_show_what_a_plugin_registers(toy, capsys):
    assert main(["list", "-p", toy]) == 0
    out = capsys.readouterr().out
    kinds = out.split("scenario kinds:\n")[1].split("strategies:")[0]
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in kinds.strip().splitlines()}
    assert rows["toy"] == "Toy setting: nearest class mean of untrained features, one pass."
    assert set(rows) == {"class-incremental", "episodic", "fscil", "online", "toy", "toy-stream"}
    assert main(["plugins", "-p", toy]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(toy))
    for what in ("scenario kind toy", "scenario kind toy-stream", "command hello", "scenario toy-blobs", "strategy idle"):
        assert what in line, what
