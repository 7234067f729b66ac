"""ConTraCon: the per-task parameter count matches the stated formula; earlier tasks' kernels,
norms and heads stay frozen (oracle-task predictions unchanged after a new task); the least
entropic task is chosen; every task is learnt through its own kernels, without exemplars."""

from __future__ import annotations

import types

import pytest
import torch

from cfs import hookimpl, testing
from cfs.errors import CfsError
from cfs.models.backbones import TimmBackbone
from cfs.strategy import Strategy
from cfs_plugins.contracon import (TaskConvQKV, least_entropy_task, per_task_count, per_task_parameters, set_task,
                                   wrap_backbone)

DIM, DEPTH, HEADS, KERNEL = 32, 2, 2, 5


def tiny_vit(in_channels: int = 1, image_size: int = 8, **_) -> TimmBackbone:
    from timm.models.vision_transformer import VisionTransformer

    return TimmBackbone(VisionTransformer(img_size=image_size, patch_size=2, in_chans=in_channels, num_classes=0,
                                          embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=2.0))


backbones = types.ModuleType("contracon_test_backbones")
backbones.cfs_add_backbones = hookimpl(lambda registry: registry.add(tiny_vit, name="tiny-vit"))


class Recorder(Strategy):
    """After each experience: task 0's oracle-task logits on fixed inputs, and its qkv weights."""

    name = "oracle-recorder"
    seen: list = []

    @hookimpl
    def cfs_after_training_exp(self, state):
        contracon = state.strategy("contracon")
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        state.model.eval()
        with torch.no_grad():
            logits = contracon.task_logits(state.model, x, 0)
        set_task(contracon.modules, len(contracon.heads) - 1)
        state.model.train()
        qkv = state.model.backbone.model.blocks[0].attn.qkv.base.weight.detach().clone()
        Recorder.seen.append((logits, qkv))


recorder = types.ModuleType("contracon_test_recorder")
recorder.cfs_add_strategies = hookimpl(lambda registry: registry.add(Recorder))

STREAM = dict(n_classes=6, n_experiences=3, per_class=40, test_per_class=20, size=8, spread=0.6)


@pytest.fixture(scope="module")
def runs():
    pm = testing.plugin_manager([backbones, recorder])
    Recorder.seen = []
    con = testing.run("contracon+oracle-recorder", options={"contracon": {"kernel_size": KERNEL, "views": 4}},
                      scenario=testing.synthetic_stream(**STREAM), epochs=8, backbone="tiny-vit", batch_size=16,
                      lr=3e-3, optimizer="adam", pm=pm)
    return {"contracon": con, "recorded": list(Recorder.seen)}


def test_per_task_parameter_count_matches_the_formula(runs):
    strat = runs["contracon"].state.strategy("contracon")
    for task in (1, 2):
        assert per_task_count(strat, task) == per_task_parameters(DEPTH, DIM, HEADS, KERNEL, n_classes=2)
    # 2 x (3*2*(25+2) + 6 + 128) + 32*2 + 2 = 658
    assert per_task_parameters(DEPTH, DIM, HEADS, KERNEL, 2) == 658


def test_per_task_count_on_vit_tiny():
    """The formula on the repository's vit-tiny (192 wide, 6 layers, 3 heads, k = 15)."""
    pm = testing.plugin_manager()
    if "vit-tiny" not in pm.backbones:
        pytest.skip("vit-tiny (cfs.models.vit) is not in this checkout")
    backbone = pm.backbones.get("vit-tiny")(in_channels=3, image_size=32)
    modules = wrap_backbone(backbone, 15)
    added = sum(p.numel() for m in modules for p in m.add_task())
    assert added + 192 * 2 + 2 == per_task_parameters(6, 192, 3, 15, 2) == 17288


def test_earlier_tasks_are_frozen(runs):
    (l0, w0), (l1, w1), (l2, w2) = runs["recorded"]
    assert torch.equal(l0, l1) and torch.equal(l0, l2)  # task 0's predictions never change
    assert torch.equal(w0, w1) and torch.equal(w0, w2)  # nor the task-1 weights every task re-weights
    strat = runs["contracon"].state.strategy("contracon")
    assert not any(p.requires_grad for t in range(3) for p in strat.task_parameters(t))


def test_least_entropy_task_by_hand():
    mean_logits = torch.tensor([[[5.0, 0.0], [0.0, 0.0]],   # task 0: confident on image 0, flat on image 1
                                [[0.0, 0.0], [0.0, 7.0]]])  # task 1: flat on image 0, confident on image 1
    assert least_entropy_task(mean_logits).tolist() == [0, 1]


def test_every_task_is_learnt_through_its_kernels(runs):
    """With the oracle task id, every task's re-weighted network classifies its own test data
    (tasks 2 and 3 train only kernels, norms and a head on the frozen task-1 transformer)."""
    state = runs["contracon"].state
    strat = state.strategy("contracon")
    state.model.eval()
    for exp in state.scenario.experiences:
        x, y = state.transform(exp.test.x), exp.test.y
        with torch.no_grad():
            pred = torch.tensor(strat.task_classes[exp.index])[strat.task_logits(state.model, x, exp.index).argmax(-1)]
        assert (pred == y).float().mean() > 0.8, exp.index
    r = testing.accuracy_matrix(runs["contracon"])
    assert r[-1].mean() > 1 / 3 - 0.05  # task-agnostic: at least what fine-tuning keeps (the last task)


def test_a_backbone_without_attention_is_a_one_line_error():
    with pytest.raises(CfsError, match="contracon needs a transformer backbone"):
        wrap_backbone(torch.nn.Sequential(torch.nn.Linear(4, 4)), 3)


def test_qkv_reweighting_is_per_head_conv_plus_gated_skip():
    base = torch.nn.Linear(4, 12)  # D = 4, 2 heads: 6 slices of 2 x 4
    m = TaskConvQKV(base, num_heads=2, kernel_size=3)
    m.add_task()
    with torch.no_grad():
        m.kernels[0].zero_()
        m.kernels[0][:, :, 1, 1] = 2.0  # centre tap: conv(W) = 2W + kernel bias
        m.kernel_bias[0].fill_(0.5)
        m.skip[0].fill_(0.0)  # sigmoid(0) = 0.5
        m.gamma[0].copy_(torch.tensor([1.0, 2.0, 3.0]))
        m.beta[0].copy_(torch.tensor([0.0, 1.0, 0.0]))
    m.task = 1
    w, b = m.task_weight(1)
    assert torch.allclose(w, 2.5 * base.weight + 0.5)
    assert torch.allclose(b, torch.cat([base.bias[:4], 2 * base.bias[4:8] + 1, 3 * base.bias[8:]]))
    x = torch.randn(3, 4)
    assert torch.allclose(m(x), x @ w.T + b)
