"""Fuzz ``cfs bench`` with hypothesis: no command line and no config file gives a traceback.

Command lines are drawn from the real flag set of ``cfs bench`` (read from its parser, so a new
flag is fuzzed too) with edge values (nan, inf, negative, huge, empty, unicode, malformed
``-o`` and ``--split``, unknown and composed strategies), and YAML files from random bytes,
non-UTF-8 text, nested junk and wrong types. Each runs in-process on split-digits and must
either exit 0 or exit 2 with exactly one stderr line ``cfs: error: ...``. Most inputs are
invalid; the few valid ones run for real at a tiny size (1 epoch, 5 images per class), so a
check that only fails mid-run is found too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import io
import itertools
import traceback
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfs.cli import build_parser, main
from cfs.config import RunConfig
from cfs.plugins import get_plugin_manager
from cfs.scenarios import builtin

N_COMMAND_LINES = 420
N_CONFIG_FILES = 130  # 550 inputs in all
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])

# Strategies and backbones that run in well under a second on split-digits at the forced size;
# slower ones (ncptm-cil, ResNets, ViTs) are tested elsewhere.
FAST_STRATEGIES = ["finetune", "joint", "lwf", "ewc", "replay", "icarl", "derpp", "er-ace", "gdumb", "kd",
                   "simplecil", "protonet", "maml", "teen", "stn"]
BACKBONES = ["mlp", "mlp", "efficientnet-lite0", "nope", "", "MLP", "mlp "]
SCENARIOS = ["split-digits"] * 6 + ["split-imagefolder", "omniglot-5w1s", "fscil-imagefolder", "split-digit", "",
                                    "../etc", "split-digits\n"]
# Flags not fuzzed: the forced ones, --config (its own test), --download (could reach the network)
# and --help (prints the help, exit 0 by design).
NOT_FUZZED = {"--out", "--no-progress", "--config", "--download", "--help", "-h", "-p"}

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
INTS = ["0", "-1", "1", "2", "3", "", " ", "nan", "inf", "1.5", "1e3", "x", "٣", "4294967295", "4294967296",
        "-4294967296", "99999999999999999999999", "0x10", "1_000", "+1", "-0", "2**32"]
SMALL_INTS = [v for v in INTS if v not in ("4294967295", "4294967296", "99999999999999999999999", "1_000", "3")]
FLOATS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e308", "1e309", "-1", "-0.0", "0", "0.01", "0.5", "0.9",
          "1e-320", "", "abc", "1e", "0x1p-3", "٠.١", "1,5", "--"]
OPTION_VALUES = ["nan", ".nan", "inf", "-.inf", "1e999", "[1,2", "[1, 2]", "{a: 1}", "{", "", "true", "-1", "0",
                 "3", "0.5", "abc", "'x'", "null", "1e3", "]", "&a", "*a", "!!python/object:os.system", "'", "\"\\x\""]
SPLITS = ["5", "2", "1", "10", "0", "-1", "x", "", "B-3Inc0", "B200-Inc10", "B0-Inc10", "B2-Inc2", "B4Inc3", "b0inc5",
          "B0-Inc0", "²", "١", "5.0", "B 2-Inc2", "99999999999999999999", "B2-Inc2-Inc2", "3"]


@functools.lru_cache(maxsize=1)
def _pm():
    return get_plugin_manager([])


@functools.lru_cache(maxsize=1)
def bench_flags() -> dict[str, argparse.Action]:
    """Every option string of ``cfs bench`` -> its argparse action (the real flag set)."""
    parser = build_parser(_pm())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {}
    for action in sub.choices["bench"]._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in NOT_FUZZED:
                flags[opt] = action
    return flags


@functools.lru_cache(maxsize=1)
def option_names() -> dict[str, list[str]]:
    """Each fast strategy's real option names (for ``-o NAME.KEY=VALUE``)."""
    names = {}
    for name in FAST_STRATEGIES:
        cls = _pm().strategies.get(name)
        names[name] = [f.name for f in dataclasses.fields(cls.Options)]
    return names


def values_for(flag: str, action: argparse.Action) -> st.SearchStrategy:
    """Edge values of the flag's type, plus random text."""
    if action.nargs == 0:
        return st.none()
    if flag == "--strategy":
        names = st.sampled_from(FAST_STRATEGIES)
        return st.one_of(names, st.tuples(names, names).map("+".join), st.sampled_from(["", "+", "finetune+", "nope",
                                                                                       "lwf+lwf", "icarl+simplecil"]), text)
    if flag in ("--option",):
        return option_value()
    if flag == "--split":
        return st.one_of(st.sampled_from(SPLITS), text)
    if flag == "--backbone":
        return st.one_of(st.sampled_from(BACKBONES), text)
    if flag == "--scenario":
        return st.one_of(st.sampled_from(SCENARIOS), text)
    if flag == "--epochs":
        return st.sampled_from(SMALL_INTS)
    if action.choices:
        return st.one_of(st.sampled_from(sorted(action.choices)), st.sampled_from(["", "CPU", "nope"]), text)
    if action.type is int:
        return st.one_of(st.sampled_from(INTS), st.integers(-(2**40), 2**40).map(str))
    if action.type is float:
        return st.one_of(st.sampled_from(FLOATS), st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if flag == "--logger":
        return st.one_of(st.sampled_from(["console", "jsonl", "nope", ""]), text)
    return st.one_of(st.sampled_from(["", "x", "nope", "/nonexistent/path", ".", "-"]), text)


@st.composite
def option_value(draw) -> str:
    strat = draw(st.one_of(st.sampled_from(FAST_STRATEGIES), st.sampled_from(["", "nope", "LWF"]), text))
    keys = option_names().get(strat) or ["lam"]
    key = draw(st.one_of(st.sampled_from(keys), st.sampled_from(["", "nope", "lam"]), text))
    value = draw(st.one_of(st.sampled_from(OPTION_VALUES), text))
    form = draw(st.sampled_from(["full", "full", "full", "no-prefix", "no-equals", "no-key"]))
    return {"full": f"{strat}.{key}={value}", "no-prefix": f"{key}={value}", "no-equals": f"{strat}.{key}",
            "no-key": f"{strat}.={value}"}[form]


@st.composite
def command_line(draw) -> list[str]:
    flags = bench_flags()
    chosen = draw(st.lists(st.sampled_from(sorted(flags)), min_size=0, max_size=6))
    argv = ["bench"]
    for flag in chosen:
        action = flags[flag]
        value = draw(values_for(flag, action))
        if value is None:
            argv.append(flag)
        elif draw(st.booleans()):
            argv.append(f"{flag}={value}")
        else:
            argv += [flag, value]
    return argv


def _tiny(argv: list[str]) -> list[str]:
    """Keep a valid run tiny: 1 epoch and 5 images per class unless the input sets them."""
    given_flags = {a.split("=", 1)[0] for a in argv}
    tail = ["--no-progress"]
    if "--epochs" not in given_flags:
        tail += ["--epochs", "1"]
    if "--max-train-per-class" not in given_flags:
        tail += ["--max-train-per-class", "5"]
    return argv + tail


_counter = itertools.count()


@pytest.fixture
def sandbox(tmp_path_factory, monkeypatch):
    """An empty data root and working folder. Two costs that have nothing to do with checking
    inputs are paid once: the protocol files are parsed once (20 YAML files per invocation
    would be most of the time of an invalid input), and a finished run's accuracy-matrix PNG
    is not drawn (matplotlib: most of the time of a valid one). Validation, training and every
    other result file run for real."""
    from cfs.evaluation import plots

    root = tmp_path_factory.mktemp("fuzz")
    (root / "data").mkdir()
    monkeypatch.setenv("CFS_DATA_ROOT", str(root / "data"))
    monkeypatch.chdir(root)
    specs = builtin.protocol_specs()
    monkeypatch.setattr(builtin, "protocol_specs", lambda: copy.deepcopy(specs))
    monkeypatch.setattr(plots, "plot_accuracy_matrix", lambda *a, **k: None)
    return root


def run_cli(argv: list[str], root: Path) -> None:
    """Run ``cfs`` in-process and check the outcome: exit 0, or exit 2 with one error line."""
    argv = _tiny(argv) + ["--out", str(root / "runs" / str(next(_counter)))]
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except BaseException:  # noqa: BLE001 - any escape (traceback, SystemExit) is the failure we look for
        pytest.fail(f"cfs {argv!r} raised:\n{traceback.format_exc()}\nstderr:\n{err.getvalue()}")
    if rc == 0:
        return
    assert rc == 2, f"cfs {argv!r} exited {rc}; stderr: {err.getvalue()!r}"
    # exactly one error line, the last; lines before it may only report runs that finished
    # before a later one failed (e.g. diverged), never a traceback
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cfs: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err.getvalue(), (
        f"cfs {argv!r} exited 2 without exactly one error line: {err.getvalue()!r}")
    assert all(": " in line and "results in" in line for line in lines[:-1]), err.getvalue()


@settings(max_examples=N_COMMAND_LINES, **SETTINGS)
@given(argv=command_line())
def test_fuzzed_command_lines_run_or_fail_with_one_line(sandbox, argv):
    run_cli(argv, sandbox)


# ---------------------------------------------------------------- config files

KEYS = [f.name for f in dataclasses.fields(RunConfig)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), text,
                    st.sampled_from(["nan", ".inf", "split-digits", "finetune", "mlp", "B0-Inc5", "5", "-1", "0"]))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.one_of(text, st.integers()), inner, max_size=3)),
                    max_leaves=8)


def _value_for(key: str) -> st.SearchStrategy:
    if key == "strategies":
        return st.one_of(st.lists(st.sampled_from(FAST_STRATEGIES), min_size=1, max_size=2), junk)
    if key == "scenario":
        return st.sampled_from(["split-digits", "nope", "", 3])
    if key == "backbone":
        return st.one_of(st.sampled_from(BACKBONES), junk)
    if key == "split":
        return st.one_of(st.sampled_from(SPLITS), junk)
    if key == "options":
        opts = st.dictionaries(st.sampled_from(["lam", "alpha", "budget", "nope", "T"]),
                               st.one_of(scalars, st.sampled_from([float("nan"), float("inf")])), max_size=2)
        return st.one_of(st.dictionaries(st.sampled_from(FAST_STRATEGIES + ["nope"]), opts, max_size=2), junk)
    if key in ("download", "resume", "data_root", "out"):
        return st.just(None)
    return st.one_of(scalars, junk)


@st.composite
def config_file(draw) -> bytes:
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "junk", "bytes", "latin1", "text", "bad-keys"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "junk":
        return yaml.safe_dump(draw(junk), allow_unicode=True).encode()
    if kind == "latin1":  # valid YAML, but not UTF-8
        return "epochs: 1\nbackbone: mlp\nscenario: caf\xe9\n".encode("latin1") + draw(st.binary(max_size=8))
    keys = draw(st.lists(st.sampled_from(KEYS + ["epoch", "batch-size", "Epochs"]), max_size=4, unique=True))
    mapping: dict = {k: draw(_value_for(k)) for k in keys}
    if kind == "bad-keys":
        mapping[draw(st.one_of(st.integers(), st.none(), st.booleans(), st.floats()))] = 1
    return yaml.safe_dump(mapping, allow_unicode=True).encode()


@settings(max_examples=N_CONFIG_FILES, **SETTINGS)
@given(content=config_file(), extra=st.lists(st.sampled_from([["--strategy", "finetune"], ["--lr", "nan"],
                                                                   ["--split", "B0-Inc5"]]), max_size=1))
def test_fuzzed_config_files_run_or_fail_with_one_line(sandbox, content, extra):
    path = sandbox / f"config-{next(_counter)}.yaml"
    path.write_bytes(content)
    run_cli(["bench", "--config", str(path), *itertools.chain.from_iterable(extra)], sandbox)


# ---------------------------------------------------------------- the cases the issue names


@pytest.mark.parametrize("argv", [
    ["--lr", "nan"], ["--lr", "inf"], ["--lr=-inf"], ["--momentum", "nan"], ["--weight-decay", "inf"],
    ["--momentum", "-0.9"], ["--weight-decay", "-1e-4"], ["--seed", "-1"], ["--seed", "4294967296"],
    ["--class-order-seed", "-1"], ["--max-train-per-class", "0"], ["--max-train-per-class", "-1"],
    ["--strategy", "lwf", "-o", "lwf.lam=nan"], ["--strategy", "lwf", "-o", "lwf.lam=.inf"],
    ["--strategy", "lwf", "-o", "lwf.lam=[1,2"], ["-o", "lam=3"], ["-o", ".lam=3"], ["--split", "B-3Inc0"],
    ["--split", "0"], ["--split", "x"], ["--split", "B200-Inc10"], ["--split", "²"],
    ["--weights", "w.pt"], ["--epochs", "1.5"], ["--lr", "abc"], ["--lr"],
])
def test_named_bad_inputs_are_refused_before_any_run(sandbox, argv, monkeypatch):
    from cfs.engine import runner

    monkeypatch.setattr(runner, "run_strategy", lambda *a, **k: pytest.fail("a run started"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["bench", *argv, "--out", str(sandbox / "refused")])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("cfs: error: "), err.getvalue()
    assert not (sandbox / "refused" / "metrics.json").exists()


@pytest.mark.parametrize("content, message", [
    (b"epochs: 2\n\xff\xfe\n", "not UTF-8"),
    (b"\x00\x01\x02binary", "not"),
    (b"- 1\n- 2\n", "must hold a mapping"),
    (b"1: 2\n", "is not a name"),
    (b"epochs: 1\nepoch: 2\n", "unknown config key 'epoch'"),
    (b"lr: .nan\n", "finite"),
    (b"options: {lwf: [1, 2]}\n", "must be a mapping"),
    (b"options: {lwf: {lam: .inf}}\nstrategies: [lwf]\n", "finite"),
    (b"seed: 2020-13-45\n", "not valid YAML"),
    (b"[" * 5000, "not valid YAML"),
], ids=["non-utf8", "binary", "list", "int-key", "unknown-key", "nan", "options-list", "option-inf", "bad-date",
        "deep-nesting"])
def test_named_bad_config_files_are_one_line(sandbox, content, message):
    path = sandbox / "bad.yaml"
    path.write_bytes(content)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["bench", "--config", str(path), "--out", str(sandbox / "refused")])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("cfs: error: ") and message in lines[0], err.getvalue()
