"""RanPAC and EASE: the closed-form head, the prototype complement, and runs that learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfs.evaluation.metrics import seen_accuracy
from cfs.features import compute_features
from cfs_plugins.ease import complement, reweighted_scores
from cfs_plugins.ranpac import RIDGE_GRID, RanpacOptions, ridge_solve, select_ridge
from _ptm_support import ptm_pm, ptm_run, synthetic_scenario  # noqa: F401 (fixtures)


def _final(result) -> float:
    res = result.state.results
    return float(seen_accuracy(np.array(res.rows), np.array(res.test_sizes))[-1])


def _tiny_vit(in_channels: int = 1, image_size: int = 4):
    from timm.models.vision_transformer import VisionTransformer

    from cfs.models.backbones import TimmBackbone

    torch.manual_seed(0)
    return TimmBackbone(VisionTransformer(img_size=image_size, patch_size=2, in_chans=in_channels, embed_dim=32,
                                          depth=2, num_heads=2, num_classes=0))


@pytest.fixture(scope="module")
def vit_pm(ptm_pm):
    if "ranpac-ease-test-vit" not in ptm_pm.backbones:
        ptm_pm.backbones.add(_tiny_vit, name="ranpac-ease-test-vit")
    return ptm_pm


# -- RanPAC ------------------------------------------------------------------------------------

def test_ridge_head_equals_a_least_squares_solve():
    g = torch.Generator().manual_seed(0)
    h = torch.relu(torch.randn(50, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 30, generator=g, dtype=torch.float64))
    y = F.one_hot(torch.randint(0, 4, (50,), generator=g), 4).double()
    lam = 0.3
    w = ridge_solve(h.T @ h, h.T @ y, lam)
    # ridge = ordinary least squares on [H; sqrt(lam) I] W = [Y; 0]
    a = torch.cat([h, lam**0.5 * torch.eye(30, dtype=torch.float64)])
    b = torch.cat([y, torch.zeros(30, 4, dtype=torch.float64)])
    assert torch.allclose(w, torch.linalg.lstsq(a, b).solution, atol=1e-8)


@pytest.mark.parametrize("rows", [20, 200])  # fewer rows than columns (kernel form) and more (primal form)
def test_lambda_search_matches_explicit_solves(rows):
    g = torch.Generator().manual_seed(1)
    h = torch.relu(torch.randn(rows, 40, generator=g, dtype=torch.float64))
    y = F.one_hot(torch.randint(0, 3, (rows,), generator=g), 3).double()
    lam, losses = select_ridge(h, y, 0.8)
    n = int(rows * 0.8)
    explicit = [float(F.mse_loss(h[n:] @ ridge_solve(h[:n].T @ h[:n], h[:n].T @ y[:n], r), y[n:])) for r in RIDGE_GRID]
    assert np.allclose(losses[4:], explicit[4:], rtol=1e-5)  # tiny lambdas: explicit solves are ill-conditioned
    assert lam == RIDGE_GRID[int(np.argmin(losses))]


def test_ranpac_accumulates_over_experiences_and_learns(ptm_run):
    scenario = synthetic_scenario()
    result = ptm_run("ranpac", scenario, options={"ranpac": {"m": 300}})
    state, strat = result.state, result.state.strategies[0]
    # G and Q are the sums over every experience's projected features, the head their ridge solution
    x = torch.cat([e.train.x for e in scenario.experiences])
    y = torch.cat([e.train.y for e in scenario.experiences])
    h = strat.project(compute_features(state.model.backbone, state.transform, x, state.device))
    assert torch.allclose(strat.g, h.T @ h, rtol=1e-9, atol=1e-6)
    assert torch.allclose(strat.q, h.T @ F.one_hot(y, 6).double(), rtol=1e-9, atol=1e-6)
    assert torch.allclose(strat.w, ridge_solve(strat.g, strat.q, strat.lambdas[-1]))
    assert len(strat.lambdas) == 3 and strat.w_rand.shape == (state.model.backbone.out_dim, 300)
    assert _final(result) > 0.8  # chance: 1/6


def test_ranpac_first_session_adaptation_uses_the_core_mechanism(ptm_run, vit_pm):
    scenario = synthetic_scenario()
    result = ptm_run("ranpac", scenario, backbone="ranpac-ease-test-vit",
                     options={"ranpac": {"m": 200, "adapt": "adapter", "adapt_epochs": 2}})
    strat = result.state.strategies[0]
    assert strat.adaptation.variant == "adapter" and strat.adaptation.adapted is not None
    assert _final(result) > 0.5


def test_ranpac_options_are_checked():
    for bad in ({"m": -1}, {"fit_fraction": 1.0}, {"adapt": "lora"}):
        with pytest.raises(ValueError):
            RanpacOptions(**bad)


# -- EASE --------------------------------------------------------------------------------------

def test_prototype_complement_by_hand():
    # two experiences of one class each, 2-d subspaces; class 0 has no real prototype in subspace 1
    protos = torch.zeros(3, 2, 2)
    protos[0, 0] = torch.tensor([1.0, 0.0])
    protos[1, 0], protos[1, 1] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    protos[2, 0], protos[2, 1] = torch.tensor([0.0, 1.0]), torch.tensor([3.0, 0.0])
    out = complement(protos, [[0], [1, 2]])
    # cos(class 0, class 1) = 1, cos(class 0, class 2) = 0 in subspace 0 -> softmax weights e/(e+1), 1/(e+1)
    w1, w2 = np.e / (np.e + 1), 1 / (np.e + 1)
    assert torch.allclose(out[0, 1], torch.tensor([3.0 * w2, 2.0 * w1]), atol=1e-6)
    assert torch.equal(out[1:], protos[1:]) and torch.equal(out[0, 0], protos[0, 0])


def test_reweighted_scores_by_hand():
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one image, subspaces 0 and 1
    protos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    s = reweighted_scores(feats, protos, [[0], [1]], alpha=0.1)
    # class 0 (experience 0): 1 * cos_0 + 0.1/1 * cos_1 = 1 + 0.1; class 1: 0.1 * 0 + 1 * 1
    assert torch.allclose(s, torch.tensor([[1.1, 1.0]]))


def test_ease_trains_one_frozen_subspace_per_experience_and_learns(ptm_run, vit_pm):
    scenario = synthetic_scenario()
    result = ptm_run("ease", scenario, backbone="ranpac-ease-test-vit", options={"ease": {"epochs": 4, "lr": 0.05}})
    state, strat = result.state, result.state.strategies[0]
    assert len(strat.sets) == 3 and strat.protos.shape == (6, 3, 32)
    base = dict(state.model.backbone.named_parameters())
    for n, p in strat.net.named_parameters():
        assert not p.requires_grad and (n not in base or torch.equal(p, base[n])), n  # backbone untouched
    ups = [sw.adapters[k].up.weight for sw in strat.sets.switches for k in range(3)]
    assert all(u.abs().sum() > 0 for u in ups)  # every set trained from its zero init
    assert strat.history[3] < strat.history[0]
    # old classes in new subspaces hold complemented prototypes, the real ones are kept
    assert torch.equal(strat.protos[4:, 2], strat.real[4:, 2]) and strat.real[:4, 2].abs().sum() == 0
    assert strat.protos[:4, 2].abs().sum() > 0
    assert _final(result) > 0.5  # chance: 1/6


def test_ease_refuses_a_backbone_without_blocks(ptm_run):
    from cfs.errors import CfsError

    with pytest.raises(CfsError, match="needs a ViT"):
        ptm_run("ease", synthetic_scenario(), options={"ease": {"epochs": 1}})
