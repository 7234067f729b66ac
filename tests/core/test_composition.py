"""A composition is a set, checked before any work (cfs.composition).

* ``A+B`` and ``B+A`` give identical metrics for every pair of first-party class-incremental
  strategies that compose; every pair that cannot is refused before any work with one line.
* A misspelt hook, a dropped ``@hookimpl`` or a bad option of the last strategy of a command
  exits 2 with one line and leaves no results folder.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import cfs_plugins.derpp as derpp_module
from cfs import testing
from cfs.cli import main
from cfs.composition import build_strategies
from cfs.errors import CfsError

#: Pairs refused, each because both strategies replace the same hook with different answers.
CONFLICTS = {
    frozenset({"icarl", "simplecil"}): "cfs_predict",
    frozenset({"icarl", "aper"}): "cfs_predict",
    frozenset({"icarl", "ncptm-cil"}): "cfs_predict",
    frozenset({"aper", "simplecil"}): "cfs_predict",
    frozenset({"aper", "ncptm-cil"}): "cfs_predict",
    frozenset({"ncptm-cil", "simplecil"}): "cfs_predict",
    frozenset({"aper", "ranpac"}): "cfs_predict",
    frozenset({"icarl", "ranpac"}): "cfs_predict",
    frozenset({"ncptm-cil", "ranpac"}): "cfs_predict",
    frozenset({"ranpac", "simplecil"}): "cfs_predict",
}
#: Small enough that the ~100 pairs x 2 orders run in a few minutes on one core.
TINY = dict(epochs=1, max_train_per_class=12, seed=1, batch_size=16)
FAST = {"pckd": {"views": 2}, "ranpac": {"m": 256}}  # RanPAC's default M=10000: an eigendecomposition of 10^4 x 10^4 per experience


@pytest.fixture(scope="module")
def pm():
    return testing.plugin_manager()


def class_incremental(pm) -> list[str]:
    """First-party class-incremental strategies that run on TINY's MLP (those declaring
    ``backbone_family = "vit"`` need a ViT; their compositions are tested in their own files)."""
    return sorted(e.name for e in pm.strategies.entries() if "class-incremental" in e.obj.compatibility
                  and getattr(e.obj, "backbone_family", None) is None
                  and e.plugin in {info.name for info in pm.info.values() if info.distribution == "cfs"})


def fingerprint(result) -> tuple:
    """Every number a run produced: accuracy matrix, per-experience losses, epoch logs."""
    r = result.state.results
    epochs = [(e.experience, e.epoch, e.loss, None if math.isnan(e.accuracy) else e.accuracy)  # nan != nan
              for e in result.timings.epochs]
    return r.rows, r.losses, r.initial, epochs, result.state.results.last_predictions.tolist()


def test_every_pair_means_the_same_in_both_orders_or_is_refused(pm):
    names = class_incremental(pm)
    assert {"finetune", "replay", "lwf", "derpp", "icarl", "ewc"} <= set(names)
    refused, composed = {}, []
    for a, b in itertools.combinations(names, 2):
        classes = [pm.strategies.get(a), pm.strategies.get(b)]
        options = {n: FAST[n] for n in (a, b) if n in FAST}
        try:
            build_strategies(classes, options)
        except CfsError as exc:
            refused[frozenset({a, b})] = str(exc)
            continue
        ab = testing.run(f"{a}+{b}", pm=pm, options=options or None, **TINY)
        ba = testing.run(f"{b}+{a}", pm=pm, options=options or None, **TINY)
        assert fingerprint(ab) == fingerprint(ba), f"{a}+{b} and {b}+{a} differ"
        composed.append((a, b))
    assert set(refused) == set(CONFLICTS), sorted(map(sorted, refused))
    for pair, message in refused.items():
        assert CONFLICTS[pair] in message and all(n in message for n in pair) and "\n" not in message
    assert len(composed) >= 80


def test_refused_composition_exits_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["bench", "--strategy", "finetune", "--strategy", "icarl+simplecil", "--epochs", "1",
                 "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cfs_predict" in err[0] and "icarl" in err[0] and "simplecil" in err[0]
    assert not out.exists()


def test_declared_fallback_yields_and_two_answers_conflict(pm):
    pm = testing.plugin_manager(plugin_args=["_contract_plugins"])
    get = pm.strategies.get
    with pytest.raises(CfsError, match="'predict-a' and 'predict-b' both replace cfs_predict"):
        build_strategies([get("predict-a"), get("predict-b")], {})
    for spec in ("predict-b+predict-fallback", "predict-fallback+predict-b"):
        result = testing.run(spec, pm=pm, epochs=1, max_train_per_class=5)
        assert result.state.results.last_predictions.eq(9).all()  # predict-b's answer wins
    alone = testing.run("predict-fallback", pm=pm, epochs=1, max_train_per_class=5)
    assert alone.state.results.last_predictions.eq(0).all()


def test_teacher_new_class_ce_is_an_explicit_option(pm):
    lwf, ewc, icarl = (pm.strategies.get(n) for n in ("lwf", "ewc", "icarl"))
    assert lwf.Options().new_class_ce and not icarl.Options().new_class_ce
    [s] = build_strategies([lwf], {"lwf": {"new_class_ce": False}})
    assert "cfs_base_loss" in s.inactive_hooks()
    # LwF's and EWC's new-class CE are one shared computation: they compose
    assert [s.name for s in build_strategies([lwf, ewc], {})] == ["ewc", "lwf"]


def test_derpp_plus_lwf_keeps_alpha_and_beta_in_every_step(pm, monkeypatch):
    calls = {"alpha": 0, "replayed": 0}
    mse, replayed = derpp_module.masked_logit_mse, derpp_module.DERpp._replayed

    def counting_mse(*args, **kwargs):
        calls["alpha"] += 1
        return mse(*args, **kwargs)

    def counting_replayed(self, *args, **kwargs):
        calls["replayed"] += 1
        return replayed(self, *args, **kwargs)

    monkeypatch.setattr(derpp_module, "masked_logit_mse", counting_mse)
    monkeypatch.setattr(derpp_module.DERpp, "_replayed", counting_replayed)
    result = testing.run("lwf+derpp", pm=pm, epochs=2, max_train_per_class=30)
    steps = result.state.iteration
    # the buffer is empty only in the very first step; every other step has both terms
    assert calls["alpha"] == steps - 1
    assert calls["replayed"] == 2 * (steps - 1)  # one draw for alpha, one for beta
    assert result.state.strategy("lwf").teacher.n_classes == 10  # LwF acted too


def test_misspelt_hook_exits_2_without_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "-p", "_contract_plugins", "--strategy", "misspelt-hook", "--no-progress",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cfs_after_trainig_exp is not a cfs hook" in err[0] and "cfs_after_training_exp" in err[0]
    assert not out.exists()


def test_override_without_hookimpl_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "-p", "_contract_plugins", "--strategy", "finetune", "--strategy", "lost-hookimpl",
                 "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lost-hookimpl" in err[0] and "cfs_after_training_exp lacks @hookimpl" in err[0]
    assert not out.exists()  # finetune did not run first


@pytest.mark.parametrize("option", ["derpp.buffer=0", "picky.size=0"])
def test_bad_option_of_the_last_strategy_exits_2_before_the_first_runs(tmp_path, capsys, option):
    out = tmp_path / "runs"
    last = option.split(".")[0]
    assert main(["bench", "-p", "_contract_plugins", "--strategy", "finetune", "--strategy", last, "-o", option,
                 "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"bad options for {last}" in err[0]
    assert "-o derpp" not in err[0] or last == "derpp"
    assert not out.exists()


def test_batch_provenance_in_concat_and_batch_replay(pm):
    """Replay's memory rows are replayed rows, whichever way they enter the batch."""
    from cfs import hookimpl
    from cfs.registry import Registry
    from cfs.strategy import Strategy

    seen: list[tuple[int, int, int]] = []

    class Probe(Strategy):
        name = "zz-probe"

        @hookimpl
        def cfs_after_forward(self, state):
            b = state.batch
            old = b.y < min(state.experience.classes)
            assert torch.equal(old, b.replayed)  # replayed rows are exactly the old classes
            assert len(state.outputs) == b.size
            seen.append((state.experience_index, int(b.incoming.sum()), int(b.replayed.sum())))

    class Plugin:
        @staticmethod
        @hookimpl
        def cfs_add_strategies(registry: Registry) -> None:
            registry.add(Probe)

    pm2 = testing.plugin_manager([Plugin])
    for mode in ("concat", "batch"):
        seen.clear()
        testing.run("replay+zz-probe", pm=pm2, epochs=1, max_train_per_class=10,
                    options={"replay": {"mode": mode, "budget": 20}})
        assert all(r == 0 for e, _, r in seen if e == 0) and any(r > 0 for e, _, r in seen if e > 0)
