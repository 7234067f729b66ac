"""TEEN's training-free calibration (METHODS.md §8.3) and the prototype baseline it improves."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.features import compute_features
from cfs_plugins.teen import calibrate_prototypes
from _ptm_support import ptm_pm, ptm_run, synthetic_scenario  # noqa: F401 (fixtures)


def test_calibration_matches_a_hand_computed_example():
    new = torch.tensor([[2.0, 0.0]])  # normalises to (1, 0)
    base = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalise to (1, 0) and (0, 1)
    out = calibrate_prototypes(new, base, alpha=0.5, tau=1.0)
    e = math.e
    w = (e / (e + 1), 1 / (e + 1))  # softmax of similarities (1, 0)
    norm = math.hypot(*w)
    delta = (w[0] / norm, w[1] / norm)
    expected = torch.tensor([[0.5 * 1 + 0.5 * delta[0], 0.5 * delta[1]]])
    assert torch.allclose(out, expected, atol=1e-6)
    assert out[0, 0].item() == pytest.approx(0.969254, abs=1e-6) and out[0, 1].item() == pytest.approx(0.172629, abs=1e-6)
    # alpha = 0 is the normalised raw prototype; alpha = 1 the base-derived shift alone
    assert torch.allclose(calibrate_prototypes(new, base, 0.0, 16.0), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(calibrate_prototypes(new, base, 1.0, 1.0), torch.tensor([delta]), atol=1e-6)


@pytest.mark.parametrize("strategy", ["protonet-fscil", "teen"])
def test_sessions_are_training_free_and_base_prototypes_fixed(ptm_run, strategy):
    scenario = synthetic_scenario("fscil", n_classes=6)
    result = ptm_run(strategy, scenario, head="cosine", epochs=3, lr=0.05)
    state, strat = result.state, result.state.strategies[0]
    backbone = state.model.backbone
    assert strat.n_base == 3 and strat.bank.prototypes.shape[0] == 6
    base_f = compute_features(backbone, state.transform, scenario.experiences[0].train.x, state.device)
    base_y = scenario.experiences[0].train.y
    raw_base = torch.stack([base_f[base_y == c].mean(0) for c in range(3)])
    assert torch.allclose(strat.bank.prototypes[:3], raw_base, atol=1e-5)  # unnormalised, unchanged
    for exp in scenario.experiences[1:]:
        f = compute_features(backbone, state.transform, exp.train.x, state.device)
        raw = f.mean(0, keepdim=True)
        want = calibrate_prototypes(raw, raw_base, strat.options.alpha, strat.options.tau) if strategy == "teen" else raw
        assert torch.allclose(strat.bank.prototypes[exp.classes], want, atol=1e-5)
    # only the base session was trained by the engine: one epoch log set, from experience 0
    assert {e.experience for e in result.timings.epochs} == {0}
    assert result.state.results.rows[-1][0] > 0.5


def test_default_alpha_is_the_official_cifar100_scripts():
    # wangkiw/TEEN scripts/cifar.sh runs -shift_weight 0.1 -softmax_t 16 -temperature 16 (METHODS.md 8.3)
    from cfs_plugins.teen import TeenOptions

    o = TeenOptions()
    assert (o.alpha, o.tau, o.scale) == (0.1, 16.0, 16.0)
