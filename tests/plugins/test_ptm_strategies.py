"""SimpleCIL, APER and NCPTM-CIL: they do what their papers (METHODS.md §1.2, §11.6) say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfs.evaluation.metrics import seen_accuracy
from cfs.features import compute_features
from cfs.models.prototypes import orthonormal_basis, simplex_etf
from cfs_plugins.ncptm_cil import (NcptmOptions, Projection, dot_regression_loss, gaussian_pap_loss, pap_loss,
                                   sample_pseudo_features)
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
    with pytest.raises(ValueError):
        NcptmOptions(pap="full")
    assert NcptmOptions().pap == "gaussian"


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
        z = strat.proj(strat.representation(state, state.transform(x, train=False)))
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


def test_gaussian_pseudo_features_have_the_stored_statistics():
    means = torch.tensor([[0.0, 0.0, 1.0], [10.0, -5.0, 2.0]])
    variances = torch.tensor([[1.0, 4.0, 0.0], [0.25, 0.0, 9.0]])
    f, y = sample_pseudo_features(means, variances, 20000, torch.Generator().manual_seed(0))
    assert f.shape == (20000, 3) and torch.equal(torch.bincount(y), torch.tensor([10000, 10000]))
    for c in (0, 1):
        fc = f[y == c]
        assert torch.allclose(fc.mean(0), means[c], atol=0.08)
        assert torch.allclose(fc.var(0), variances[c], rtol=0.05, atol=1e-6)
        # off-diagonal covariance ~ 0 (diagonal Gaussian)
        cov = torch.cov(fc.T)
        assert cov[~torch.eye(3, dtype=torch.bool)].abs().max() < 0.1
    assert torch.all(f[y == 0, 2] == 1.0) and torch.all(f[y == 1, 1] == -5.0)  # zero variance: the mean exactly
    # class-balanced: 7 draws over 3 classes -> 2 or 3 each
    _, y = sample_pseudo_features(torch.zeros(3, 2), torch.ones(3, 2), 7, torch.Generator().manual_seed(1))
    assert sorted(torch.bincount(y, minlength=3).tolist()) == [2, 2, 3]


def test_gaussian_pap_by_hand_and_it_pulls_pseudo_features_to_their_vertex():
    # zero variance: every pseudo-feature is the mean, so the term is the mean-PAP value by hand
    means, target = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])
    norm = lambda m: F.normalize(m, dim=1)  # noqa: E731
    loss = gaussian_pap_loss(norm, means, torch.zeros(1, 2), target, 5, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.5 * (0.8 - 1) ** 2)
    # with variance it is the mean over the draws of 1/2 (normalize(f~)^T e_c - 1)^2
    gen = torch.Generator().manual_seed(3)
    f, _ = sample_pseudo_features(means, torch.ones(1, 2), 6, torch.Generator().manual_seed(3))
    by_hand = sum(0.5 * (float(r[1] / r.norm()) - 1) ** 2 for r in f) / 6
    assert gaussian_pap_loss(norm, means, torch.ones(1, 2), target, 6, gen).item() == pytest.approx(by_hand, rel=1e-5)

    # optimising only this term moves h so that each class's pseudo-features land on *its* vertex
    torch.manual_seed(0)
    d, k = 8, 3
    E = simplex_etf(orthonormal_basis(6, k, 0), k).float().T  # (K, d') vertices
    means = torch.randn(k, d) * 2
    variances = torch.rand(k, d) * 0.5 + 0.1
    proj = Projection(d, 32, 6)
    gen = torch.Generator().manual_seed(0)

    def alignment():
        with torch.no_grad():
            f, y = sample_pseudo_features(means, variances, 600, torch.Generator().manual_seed(99))
            z = proj(f)
            return (z * E[y]).sum(1).mean().item(), ((z @ E.T).argmax(1) == y).float().mean().item()

    cos0, _ = alignment()
    opt = torch.optim.SGD(proj.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(150):
        loss = gaussian_pap_loss(proj, means, variances, E, 48, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    cos1, acc1 = alignment()
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    assert cos0 < 0.5 < 0.9 < cos1 and acc1 > 0.95


def test_ncptm_stores_per_class_feature_statistics(ptm_run):
    scenario = synthetic_scenario()
    opts = {"epochs": 3, "hidden": 64, "proj_dim": 16}
    result = ptm_run("ncptm-cil", scenario, options={"ncptm-cil": opts})
    strat, state = result.state.strategies[0], result.state
    # the default representation is APER's [PTM; adapted]
    assert strat.means.shape == strat.variances.shape == (6, 2 * state.model.backbone.out_dim)
    for exp in scenario.experiences:
        with torch.no_grad():
            ptm = compute_features(state.model.backbone, state.transform, exp.train.x, state.device)
            f = torch.cat([ptm, strat.adapter(ptm)], dim=1)
        for c in exp.classes:
            assert torch.allclose(strat.means[c], f[exp.train.y == c].mean(0), atol=1e-5)
            assert torch.allclose(strat.variances[c], f[exp.train.y == c].var(0), atol=1e-5)
    assert strat.variances.min() >= 0 and strat.variances.sum() > 0


def test_gaussian_pap_keeps_old_classes_better_than_the_mean_anchor(ptm_run):
    # overlapping classes (noise 1.0), 5 tasks, a flexible h: the projection must move to place
    # new classes, and an anchor on one point per old class leaves the rest of the class free
    opts = {"epochs": 30, "lr": 0.1, "hidden": 256, "proj_dim": 16}
    gaps = []
    for seed in (0, 1, 2):
        old = {}
        for pap in ("mean", "gaussian"):
            scenario = synthetic_scenario(n_classes=10, seed=seed, noise=1.0, n_train=200)
            rows = ptm_run("ncptm-cil", scenario, options={"ncptm-cil": {**opts, "pap": pap}}).state.results.rows
            old[pap] = float(np.mean(rows[-1][:-1]))  # tasks 0..3 after the last task
        gaps.append(old["gaussian"] - old["mean"])
    assert min(gaps) > 0 and np.mean(gaps) > 0.02, gaps


def test_ncptm_state_round_trips_with_the_variances(ptm_run):
    import io

    scenario = synthetic_scenario()
    result = ptm_run("ncptm-cil", scenario, options={"ncptm-cil": {"epochs": 3, "hidden": 64, "proj_dim": 16}})
    strat, state = result.state.strategies[0], result.state
    buf = io.BytesIO()
    torch.save(strat.state_dict(), buf)
    buf.seek(0)
    fresh = type(strat)(strat.options)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.variances, strat.variances) and torch.equal(fresh.means, strat.means)
    x = scenario.experiences[0].test.x
    assert torch.equal(fresh.cfs_predict(state=state, x=x), strat.cfs_predict(state=state, x=x))


# -- APER's CNN variants (BN / SSF; METHODS.md 11.6 "where the adapter sits") -------------------

def _aper_cnn(ptm_run, variant: str, scenario=None, **opts):
    from _ptm_support import cnn_config

    o = {"variant": variant, "epochs": 5, **({"lr": 0.1} if variant == "ssf" else {}), **opts}
    return ptm_run("aper", scenario or synthetic_scenario(), **cnn_config(aper=o))


def _all_test(scenario):
    return (torch.cat([e.test.x for e in scenario.experiences]), torch.cat([e.test.y for e in scenario.experiences]))


@pytest.mark.parametrize("variant", ["bn", "ssf"])
def test_aper_cnn_variants_change_the_features_and_the_predictions(ptm_run, variant):
    from _ptm_support import cnn_config

    scenario = synthetic_scenario()
    aper = _aper_cnn(ptm_run, variant, scenario)
    simple = ptm_run("simplecil", synthetic_scenario(), **cnn_config())
    strat, state = aper.state.strategies[0], aper.state
    assert strat.variant == variant and strat.adapter is None
    x, _ = _all_test(scenario)
    ptm = compute_features(state.model.backbone, state.transform, x, state.device)
    adapted = compute_features(strat.adapted, state.transform, x, state.device)
    assert ((adapted - ptm).norm() / ptm.norm()).item() > 0.05  # not the 1e-5 of the pooled adapter
    d = state.model.backbone.out_dim
    assert strat.bank.prototypes.shape == (6, 2 * d)  # [PTM; adapted]
    # the PTM half of the prototypes is SimpleCIL's bank, the adapted half is not
    assert torch.allclose(strat.bank.prototypes[:, :d], simple.state.strategies[0].bank.prototypes, atol=1e-5)
    # the pre-trained backbone is untouched (same seed: the same initial weights as SimpleCIL's)
    ref = simple.state.model.backbone.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in state.model.backbone.state_dict().items())
    # predictions differ from SimpleCIL's
    pa = strat.cfs_predict(state=state, x=state.transform(x, train=False)).argmax(1)
    ps = simple.state.strategies[0].cfs_predict(state=simple.state, x=simple.state.transform(x, train=False)).argmax(1)
    assert (pa != ps).any()
    assert not any(p.requires_grad for p in strat.adapted.parameters())


def test_aper_ssf_trains_only_scale_and_shift(ptm_run):
    aper = _aper_cnn(ptm_run, "ssf")
    strat, ptm = aper.state.strategies[0], aper.state.model.backbone
    assert strat.history[-1] < strat.history[0]  # CE through the cosine head went down
    base = dict(ptm.named_parameters())
    names = [n for n, _ in strat.adapted.named_parameters()]
    ssf_names = [n for n in names if n.endswith(("ssf_scale", "ssf_shift"))]
    assert ssf_names and set(names) - set(ssf_names) == set(base)
    for n, p in strat.adapted.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n  # frozen weights stayed frozen
    moved = [(p - (1.0 if n.endswith("scale") else 0.0)).abs().max().item()
             for n, p in strat.adapted.named_parameters() if n in ssf_names]
    assert max(moved) > 1e-3


def test_aper_bn_reestimates_statistics_only(ptm_run):
    aper = _aper_cnn(ptm_run, "bn")
    strat, ptm = aper.state.strategies[0], aper.state.model.backbone
    base = ptm.state_dict()
    adapted = strat.adapted.state_dict()
    assert set(adapted) == set(base)
    stats = [k for k in base if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(adapted[k], base[k]) for k in stats)
    for n, _ in ptm.named_parameters():
        assert torch.equal(adapted[n], base[n]), n  # weights and affine untouched (official BN variant)


def test_aper_default_variant_follows_the_backbone(ptm_run):
    from _ptm_support import cnn_config

    first = synthetic_scenario()
    first.experiences = first.experiences[:1]
    assert ptm_run("aper", first, **cnn_config(aper={"epochs": 1})).state.strategies[0].variant == "bn"
    assert ptm_run("aper", first, options={"aper": {"epochs": 1}}).state.strategies[0].variant == "adapter"


def test_aper_variant_option_is_validated(ptm_run):
    from cfs.errors import CfsError
    from cfs_plugins.aper import AperOptions

    with pytest.raises(ValueError, match="variant"):
        AperOptions(variant="vpt")
    with pytest.raises(CfsError, match="BatchNorm"):  # the MLP has no BatchNorm to re-estimate
        ptm_run("aper", synthetic_scenario(), options={"aper": {"variant": "bn", "epochs": 1}})


@pytest.mark.parametrize("variant", ["bn", "ssf"])
def test_aper_cnn_adaptation_is_fixed_after_task_one(ptm_run, variant):
    first = synthetic_scenario()
    first.experiences = first.experiences[:1]
    one = _aper_cnn(ptm_run, variant, first).state.strategies[0].adapted.state_dict()
    three = _aper_cnn(ptm_run, variant).state.strategies[0].adapted.state_dict()
    assert all(torch.equal(one[k], three[k]) for k in one)


@pytest.mark.parametrize("variant", ["bn", "ssf"])
def test_aper_cnn_state_round_trips(ptm_run, variant):
    from continual.test_state_round_trip import round_trip

    scenario = synthetic_scenario()
    result = _aper_cnn(ptm_run, variant, scenario, epochs=2)
    strat, state = result.state.strategies[0], result.state
    fresh = round_trip(strat)
    assert fresh.variant == variant
    x = state.transform(torch.cat([e.test.x for e in scenario.experiences]), train=False)
    assert torch.equal(fresh.cfs_predict(state=state, x=x), strat.cfs_predict(state=state, x=x))
    # a restored strategy saves the same adapted backbone again
    assert round_trip(fresh).variant == variant and fresh.state_dict()["adaptation"]["adapted"].keys() == strat.adapted.state_dict().keys()


def _tiny_vit(in_channels: int = 1, image_size: int = 4):
    from cfs.models.backbones import timm_backbone

    return timm_backbone("vit_tiny_patch16_224", in_channels=in_channels, image_size=image_size,
                         img_size=image_size, patch_size=2, depth=2)


def test_aper_on_a_vit_trains_adaptformer_inside_the_blocks(ptm_run, ptm_pm):
    from continual.test_state_round_trip import round_trip

    if "tiny-vit-aper-test" not in ptm_pm.backbones:
        ptm_pm.backbones.add(_tiny_vit, name="tiny-vit-aper-test")
    scenario = synthetic_scenario()
    result = ptm_run("aper", scenario, backbone="tiny-vit-aper-test", options={"aper": {"epochs": 5, "lr": 0.1}})
    strat, state = result.state.strategies[0], result.state
    assert strat.variant == "adapter" and strat.adapter is None  # in-block, not the pooled adapter
    assert strat.history[-1] < strat.history[0]
    blocks = strat.adapted.model.blocks
    assert all(b.drop_path2.adapter.up.weight.abs().sum() > 0 for b in blocks)  # trained from zero
    base = dict(state.model.backbone.named_parameters())
    for n, p in strat.adapted.named_parameters():
        assert not p.requires_grad and (n not in base or torch.equal(p, base[n])), n
    x, _ = _all_test(scenario)
    ptm = compute_features(state.model.backbone, state.transform, x, state.device)
    adapted = compute_features(strat.adapted, state.transform, x, state.device)
    # 15 SGD steps through a cosine head with sigma 1: a small move, but 100x the pooled adapter's 1e-5
    assert ((adapted - ptm).norm() / ptm.norm()).item() > 1e-3
    fresh = round_trip(strat)
    xt = state.transform(x, train=False)
    assert torch.equal(fresh.cfs_predict(state=state, x=xt), strat.cfs_predict(state=state, x=xt))


# -- NCPTM-CIL on the core's first-task adaptation (issue 11 item 1: a real adapter) -----------

def test_ncptm_on_a_cnn_reads_bn_adapted_features_by_default(ptm_run):
    from _ptm_support import cnn_config

    scenario = synthetic_scenario()
    opts = {"epochs": 3, "hidden": 64, "proj_dim": 16, "adapter_epochs": 2}
    result = ptm_run("ncptm-cil", scenario, **cnn_config(**{"ncptm-cil": {**opts, "representation": "adapted"}}))
    strat, state = result.state.strategies[0], result.state
    assert strat.adaptation.variant == "bn" and strat.adapter is None
    x = scenario.experiences[0].train.x
    ptm = compute_features(state.model.backbone, state.transform, x, state.device)
    adapted = compute_features(strat.adaptation.adapted, state.transform, x, state.device)
    assert ((adapted - ptm).norm() / ptm.norm()).item() > 0.05
    # the stored class statistics are those of the adapted features (METHODS.md 1.2: f = adapted)
    c = scenario.experiences[0].classes[0]
    assert torch.allclose(strat.means[c], adapted[scenario.experiences[0].train.y == c].mean(0), atol=1e-5)
    # concat (the default): [PTM; adapted]; none: the PTM features
    both = ptm_run("ncptm-cil", scenario, **cnn_config(**{"ncptm-cil": opts}))
    assert both.state.strategies[0].means.shape[1] == 2 * state.model.backbone.out_dim
    plain = ptm_run("ncptm-cil", scenario, **cnn_config(**{"ncptm-cil": {**opts, "adapter": "none"}}))
    assert plain.state.strategies[0].adaptation is None
    assert torch.allclose(plain.state.strategies[0].means[c], ptm[scenario.experiences[0].train.y == c].mean(0), atol=1e-5)


def test_ncptm_with_an_adapted_cnn_round_trips(ptm_run):
    from _ptm_support import cnn_config
    from continual.test_state_round_trip import round_trip

    scenario = synthetic_scenario()
    result = ptm_run("ncptm-cil", scenario, **cnn_config(**{"ncptm-cil": {
        "epochs": 2, "hidden": 32, "proj_dim": 16, "adapter": "ssf", "adapter_epochs": 2}}))
    strat, state = result.state.strategies[0], result.state
    fresh = round_trip(strat)
    x = state.transform(torch.cat([e.test.x for e in scenario.experiences]), train=False)
    assert torch.equal(fresh.cfs_predict(state=state, x=x), strat.cfs_predict(state=state, x=x))
