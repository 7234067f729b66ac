"""`cfs bench | list | plugins` as a user runs them, and the one-line errors."""

import json

import numpy as np
import pytest

from cfs.cli import main


def test_bench_writes_results_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--strategy", "finetune", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "finetune" in table and "final acc %" in table
    for name in ("config.yaml", "run.json", "metrics.json", "accuracy_matrix.csv", "eval_results.csv",
                 "training_results.csv", "accuracy_matrix.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["accuracy_matrix"]) == 5
    assert "Top1_Acc_Stream/eval_phase/test_stream/Task000" in metrics["avalanche"]
    run = json.loads((out / "run.json").read_text())
    np.random.seed(1993)  # PyCIL's way of drawing the class order
    assert run["seed"] == 0 and run["scenario"]["class_order"] == np.random.permutation(10).tolist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_config_file_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nstrategies: [finetune]\nseed: 3\n")
    assert main(["bench", "--config", str(cfg), "--seed", "4", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "seed: 4" in (tmp_path / "o" / "config.yaml").read_text()


@pytest.mark.parametrize("argv,msg", [
    (["bench", "--scenario", "split-cifar"], "did you mean: split-cifar10"),
    (["bench", "--strategy", "fintune"], "did you mean: finetune"),
    (["bench", "--backbone", "resnet33"], "did you mean: resnet32"),
    (["bench", "--epochs", "0"], "at least 1"),
    (["bench", "--strategy", "finetune", "-o", "finetune.lam=3"], "unknown option finetune.lam"),
    (["bench", "--scenario", "split-cifar100", "--data-root", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["bench", "--split", "B3-Inc4"], "does not fit"),
    (["bench", "-p", "no_such_module_xyz"], "cannot import plugin module"),
    (["bench", "--backbone", "conv4"], "at least 16x16"),  # 8x8 digits: checked before any folder
    (["bench", "--pretrained"], "has no pretrained weights"),  # the MLP: was silently ignored
    (["bench", "--strategy", "l2p"], "needs a vit backbone"),  # prompt methods on the MLP: before any folder
    (["bench", "--strategy", "finetune", "--strategy", "contracon"], "needs a vit backbone"),
])
def test_user_errors_one_line_exit_2(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "never"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfs: error:") and msg in err and "\n" not in err
    assert not (tmp_path / "never").exists()


def test_list_and_plugins(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "split-cifar100" in out and "finetune" in out and "resnet32" in out
    kinds = out.split("scenario kinds:\n")[1].split("strategies:\n")[0]
    assert [line.split()[0] for line in kinds.splitlines()] == ["class-incremental", "episodic", "fscil", "online"]
    loggers = out.split("loggers:\n")[1]
    assert [line.split()[0] for line in loggers.splitlines()] == ["console", "jsonl", "tensorboard"]
    assert main(["plugins"]) == 0
    assert "joint (cfs; cfs_plugins.joint): strategy joint" in capsys.readouterr().out
    assert main(["-p", "no:joint", "list"]) == 0  # -p before the subcommand is read too
    assert "joint" not in capsys.readouterr().out.split("strategies:\n")[1].split("backbones:")[0]


def test_unknown_command_flag_and_no_command_are_one_line_errors(capsys):
    for argv, expected in ((["benhc"], "invalid choice: 'benhc'"), ([], "required: command"),
                           (["bench", "--bogus"], "unrecognized arguments: --bogus")):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cfs: error:") and expected in lines[0], lines


def test_every_bench_flag_has_help_with_its_default():
    """`cfs bench --help` is the reference: each option says what it does and its default."""
    import argparse

    from cfs.cli import build_parser
    from cfs.commands.bench import bench_config
    from cfs.plugins import get_plugin_manager

    pm = get_plugin_manager()
    parser = build_parser(pm)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = sub.choices["bench"]
    assert bench.description
    options = [a for a in bench._actions if a.option_strings]
    assert len(options) > 30
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        if action.dest not in ("help", "plugins"):  # argparse's -h and the shared -p
            assert "default" in action.help, action.option_strings
    args = parser.parse_args(["bench", "--val-episodes", "7", "--scenario", "omniglot-5w1s"])
    assert bench_config(args, pm).val_episodes == 7
