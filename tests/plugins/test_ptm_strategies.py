"""SimpleCIL, APER and NCPTM-CIL: they do what their papers (METHODS.md §1.2, §11.6) say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfs.evaluation.metrics import seen_accuracy
from cfs.features import compute_features
from cfs_plugins.ncptm_cil import NcptmOptions, dot_regression_loss, pap_loss
from _ptm_support import ptm_pm, ptm_run, synthetic_scenario  # noqa: F401 (fixtures)


def _final(result) -> float:
    res = result.state.results
    return float(seen_accuracy(np.array(res.rows), np.array(res.test_sizes))[-1])


def test_simplecil_prototypes_are_class_means_and_classify_by_cosine(ptm_run):
    scenario = synthetic_scenario()
    result = ptm_run("simplecil", scenario)
    state, strat = result.state, result.state.strategies[0]
    backbone = state.model.backbone
    train = [e.train for e in scenario.experiences]
    for exp in scenario.experiences:
        f = compute_features(backbone, state.transform, exp.train.x, state.device)
        for c in exp.classes:
            assert torch.allclose(strat.bank.prototypes[c], f[exp.train.y == c].mean(0), atol=1e-6)
    # the backbone is untouched (training-free) and nothing trained a head
    assert state.optimizer is None and len(train) == 3
    # predictions are the nearest prototype by cosine
    x = torch.cat([e.test.x for e in scenario.experiences])
    y = torch.cat([e.test.y for e in scenario.experiences])
    f = compute_features(backbone, state.transform, x, state.device)
    pred = (F.normalize(f, dim=1) @ F.normalize(strat.bank.prototypes, dim=1).T).argmax(1)
    assert _final(result) == pytest.approx((pred == y).float().mean().item(), abs=1e-6)
    assert _final(result) > 0.8


def test_aper_trains_the_adapter_on_the_first_task_only(ptm_run):
    scenario = synthetic_scenario()
    result = ptm_run("aper", scenario, options={"aper": {"epochs": 15, "lr": 0.05}})
    strat = result.state.strategies[0]
    assert strat.history[-1] < strat.history[0]  # CE through the adapter went down
    assert strat.adapter.up.weight.abs().sum() > 0  # and moved the zero-initialised up-projection
    d = result.state.model.backbone.out_dim
    assert strat.bank.prototypes.shape == (6, 2 * d)  # [PTM; adapted] concatenation
    # frozen after the first task: the later tasks do not change it
    assert not any(p.requires_grad for p in strat.adapter.parameters())
    assert _final(result) > 0.8


def test_aper_adapter_is_fixed_after_task_one(ptm_run):
    scenario = synthetic_scenario()
    first = synthetic_scenario()
    first.experiences = first.experiences[:1]
    one = ptm_run("aper", first, options={"aper": {"epochs": 5}}).state.strategies[0].adapter.state_dict()
    three = ptm_run("aper", scenario, options={"aper": {"epochs": 5}}).state.strategies[0].adapter.state_dict()
    assert all(torch.equal(one[k], three[k]) for k in one)


def test_dot_regression_and_pap_losses_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert dot_regression_loss(z, t).item() == pytest.approx((0.5 * (0.6 - 1) ** 2 + 0) / 2)
    means = torch.tensor([[3.0, 4.0]])  # projection = L2 normalisation -> (0.6, 0.8)
    target = torch.tensor([[0.0, 1.0]])
    assert pap_loss(lambda m: F.normalize(m, dim=1), means, target).item() == pytest.approx(0.5 * (0.8 - 1) ** 2)


def test_ncptm_options_are_validated():
    with pytest.raises(ValueError):
        NcptmOptions(loss="mse")
    with pytest.raises(ValueError):
        NcptmOptions(inference="knn")


@pytest.mark.parametrize("options", [{}, {"inference": "ncm"}])
def test_ncptm_aligns_features_to_the_growing_etf(ptm_run, options):
    scenario = synthetic_scenario()
    opts = {"epochs": 15, "lr": 0.05, "hidden": 64, "proj_dim": 16, **options}
    result = ptm_run("ncptm-cil", scenario, options={"ncptm-cil": opts})
    strat, state = result.state.strategies[0], result.state
    E = strat.etf(6, torch.device("cpu"))
    gram = E.T @ E
    assert torch.allclose(gram[~torch.eye(6, dtype=torch.bool)], torch.full((30,), -1 / 5), atol=1e-6)
    # the projected features of every class lie close to their ETF vertex (alignment), the
    # first task's classes included (PAP kept them there while new vertices were added)
    x = torch.cat([e.test.x for e in scenario.experiences])
    y = torch.cat([e.test.y for e in scenario.experiences])
    with torch.no_grad():
        z = strat.proj(strat.adapter(compute_features(state.model.backbone, state.transform, x, state.device)))
    cos_true = (z @ E)[torch.arange(len(y)), y]
    assert cos_true[y < 2].mean() > 0.5 and cos_true.mean() > 0.5
    assert _final(result) > 0.9


def test_without_pap_the_old_classes_are_forgotten(ptm_run):
    opts = {"epochs": 15, "lr": 0.05, "hidden": 64, "proj_dim": 16}
    with_pap = ptm_run("ncptm-cil", synthetic_scenario(), options={"ncptm-cil": opts}).state.results.rows[-1]
    no_pap = ptm_run("ncptm-cil", synthetic_scenario(), options={"ncptm-cil": {**opts, "lam_pap": 0.0}}).state.results.rows[-1]
    assert with_pap[0] > 0.9 and no_pap[0] < 0.5


def test_ncptm_ce_option_learns_a_task(ptm_run):
    first = synthetic_scenario()
    first.experiences = first.experiences[:1]
    opts = {"epochs": 15, "lr": 0.001, "hidden": 64, "proj_dim": 16, "loss": "ce"}
    result = ptm_run("ncptm-cil", first, options={"ncptm-cil": opts})
    strat = result.state.strategies[0]
    assert strat.history[-1] < 0.5 * strat.history[0] and result.state.results.rows[-1][0] > 0.9


def test_ncptm_rejects_an_etf_that_does_not_fit(ptm_run):
    from cfs.errors import CfsError

    with pytest.raises(CfsError, match="proj_dim"):
        ptm_run("ncptm-cil", synthetic_scenario(), options={"ncptm-cil": {"proj_dim": 4, "epochs": 1}})
