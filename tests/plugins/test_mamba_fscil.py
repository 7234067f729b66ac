"""Mamba-FSCIL: the suppression and separation losses, the ETF loss pieces and the session
schedule by hand; the projector's new branch starts as a no-op; a full run that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cfs.data import load_dataset
from cfs.data.transforms import BatchTransform
from cfs.evaluation.fscil import fscil_metrics
from cfs.scenarios.base import Scenario
from cfs.scenarios.fscil import build_sessions, generic_sessions
from cfs_plugins.mamba_fscil import (
    DualSelectiveProjector,
    MambaFscil,
    dot_regression_loss,
    length_rect,
    separation_loss,
    session_lr,
    suppression_loss,
)
from _ptm_support import ptm_pm, ptm_run  # noqa: F401 (fixtures)


def test_suppression_loss_by_hand():
    z = torch.zeros(3, 2, 2)
    z[0] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # base sample: |z|_F = 5 over 4 entries
    z[1] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # novel samples: |z|_F = sqrt(4 + 16) over 8 entries
    z[2] = torch.tensor([[2.0, 2.0], [2.0, 0.0]])
    is_base = torch.tensor([True, False, False])
    got = suppression_loss(z, is_base, w_base=100.0, w_novel=1e-5)
    assert got.item() == pytest.approx(100 * 5 / 4 - 1e-5 * math.sqrt(4 + 12) / 8, rel=1e-6)
    # a group that is absent contributes nothing
    assert suppression_loss(z, torch.tensor([True, True, True]), 1.0, 1.0).item() == pytest.approx(
        math.sqrt(25 + 4 + 12) / 12, rel=1e-6)


def test_separation_loss_by_hand():
    is_base = torch.tensor([True, True, False])
    p = torch.zeros(3, 2, 2)  # (batch, k, L)
    p[0, 0] = 1.0  # base mean over samples and positions: (0.5, 0) -> direction (1, 0)
    p[2, 0], p[2, 1] = 0.6, 0.8  # novel mean: (0.6, 0.8), cosine 0.6 with (1, 0)
    # mean |I - S| over the 2x2 matrix: off-diagonal 0.6 twice, diagonal 0
    assert separation_loss(p, is_base).item() == pytest.approx(2 * 0.6 / 4, abs=1e-6)
    p[2] = p[0]  # the same direction for both groups: off-diagonal 1
    assert separation_loss(p, is_base).item() == pytest.approx(0.5, abs=1e-6)


def test_dot_regression_and_class_lengths_by_hand():
    feat = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    target = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    # dots 0 and 1, unit targets: 0.5 * mean((0 - 1)^2, (1 - 1)^2) = 0.25
    assert dot_regression_loss(feat, target).item() == pytest.approx(0.25)
    assert dot_regression_loss(feat, 2 * target, torch.tensor([2.0, 2.0])).item() == pytest.approx(0.5 * (4 + 0) / 2)
    rect = length_rect(torch.tensor([0, 0, 1]), 3)  # gamma = 3 labels / 2 classes = 1.5
    assert rect.tolist() == pytest.approx([math.sqrt(1.5 / 2), math.sqrt(1.5), 1.0])


def test_session_schedule_warms_up_anneals_and_cools_down():
    lr = [session_lr(s, 200, 0.25) for s in range(1, 201)]
    assert lr[0] == pytest.approx(0.25 * (0.1 + 0.9 / 5) * 1, rel=0.02)  # warm-up from 0.1 x
    assert max(lr) == pytest.approx(lr[4], rel=1e-6) and lr[4] < 0.25
    assert lr[194] == pytest.approx(0.0025, rel=1e-3)  # end of the cosine: lr / 100
    assert lr[-1] == pytest.approx(0.00025)  # cool-down: lr / 1000


def test_new_branch_starts_as_a_no_op_and_detaches_the_main_branch():
    torch.manual_seed(0)
    proj = DualSelectiveProjector(8, 8, 2, d_state=4, dt_rank=4)
    fmap = torch.randn(3, 8, 4, 4)  # pooled to 2x2
    before = proj(fmap)["out"]
    proj.add_new_branch()
    res = proj(fmap)
    assert torch.allclose(res["out"], before, atol=1e-6)
    assert torch.count_nonzero(res["z"]) == 0  # the new gate is zero at the start
    res["out"].sum().backward()
    assert all(p.grad is None for p in proj.main.parameters())
    assert proj.new.pos.grad is not None


def _image_scenario() -> Scenario:
    data = load_dataset("synthetic", n_classes=6, n_train_per_class=60, n_test_per_class=40, shape=(3, 8, 8),
                        seed=0, noise=0.6)
    order, exps = build_sessions(data, generic_sessions(data, base_classes=3, ways=1, shots=5, seed=0))
    return Scenario("synthetic-images", "fscil", exps, order, [], BatchTransform(mean=(0.0,) * 3, std=(1.0,) * 3),
                    data.input_shape)


def test_mamba_fscil_learns_with_training_of_the_new_branch_only(ptm_run):
    options = {"mamba-fscil": {"d_state": 8, "steps": 100, "lr": 0.1}}
    result = ptm_run("mamba-fscil", _image_scenario(), backbone="resnet20", epochs=4, lr=0.05, options=options)
    strat: MambaFscil = result.state.strategies[0]
    assert strat.etf.shape == (64, 6) and strat.n_base == 3
    assert strat.projector.new is not None and strat.session_images == 3 * 100 * 8
    assert strat.memory_x.shape[0] == 6 and strat.memory_y.tolist() == [0, 1, 2, 3, 4, 5]
    assert {e.experience for e in result.timings.epochs} == {0}
    res = result.state.results
    m = fscil_metrics(np.array(res.rows), np.array(res.test_sizes))
    assert m["session_accuracy"][-1] > 1 / 6 + 0.3
    assert m["novel_accuracy"][-1] > 1 / 6 + 0.2
    again = MambaFscil(strat.options)
    again.load_state_dict(strat.state_dict())
    maps = torch.randn(2, 64, 2, 2)
    again.projector.eval(), strat.projector.eval()
    assert torch.allclose(again.projector(maps)["out"], strat.projector(maps)["out"], atol=1e-6)


def test_backbone_without_a_feature_map_is_refused(ptm_run):
    from cfs.errors import CfsError

    with pytest.raises(CfsError, match="feature map"):
        ptm_run("mamba-fscil", _image_scenario(), backbone="mlp")
