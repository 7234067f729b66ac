"""LaViT: measured FLOPs match the stated formula and drop below a full-attention ViT of the same
width and depth; less-attention layers compute no Q.K^T and reuse the previous scores; the DP
loss by hand and through the gradient; a LaViT trains a class-incremental and a few-shot
strategy end to end."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cfs import testing
from cfs.errors import CfsError
from cfs.models.lavit import SIZES, LaViT, LessAttention, VanillaAttention, attention_flops, diagonality_preserving_loss


def measured_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, dict]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops(), counter.get_flop_counts()


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_flops_drop_by_the_stated_formula(size):
    x = torch.randn(2, 3, 32, 32)
    la, _ = measured_flops(LaViT(3, 32, SIZES[size]).eval(), x)
    full, _ = measured_flops(LaViT(3, 32, SIZES[size], less_attention=False).eval(), x)
    assert la == attention_flops(SIZES[size], 3, 32, less_attention=True, batch=2)
    assert full == attention_flops(SIZES[size], 3, 32, less_attention=False, batch=2)
    # the saving, written out: per LA layer 2*(2 N D^2 + N^2 D - 2 H N^3), minus 2*16 N_m^2 per
    # stage transition (attention downsampling), per image
    s = SIZES[size]
    saving = 0
    for m, (d, h, depth) in enumerate(zip(s.dims, s.heads, s.depths)):
        n = (8 >> m) ** 2
        saving += (depth - 1) * 2 * (2 * n * d * d + n * n * d - 2 * h * n**3) - (2 * 16 * n * n if m else 0)
    assert la / full == pytest.approx(1 - 2 * saving / full, rel=1e-12)
    assert la / full < {"tiny": 0.94, "small": 0.89}[size]


def test_less_attention_layers_compute_no_query_key_product():
    """Per module, an LA layer costs exactly V, the N x N maps Theta/Psi, softmax(A) V and the
    output projection: no Q or K projection and no Q.K^T. A VA layer costs Q.K^T on top."""
    model = LaViT(3, 32, SIZES["tiny"]).eval()
    b = 2
    _, per_module = measured_flops(model, torch.randn(b, 3, 32, 32))
    for name, mod in model.named_modules():
        if not isinstance(mod, (LessAttention, VanillaAttention)):
            continue
        stage = int(name.split(".")[1])
        n, d, h = (8 >> stage) ** 2, SIZES["tiny"].dims[stage], SIZES["tiny"].heads[stage]
        flops = sum(per_module[f"LaViT.{name}"].values())
        if isinstance(mod, LessAttention):
            assert not hasattr(mod, "qkv")
            assert flops == 2 * b * (2 * n * d * d + n * n * d + 2 * h * n**3)
        else:
            assert flops == 2 * b * (4 * n * d * d + 2 * n * n * d)


def test_less_attention_reuses_the_previous_scores_tensor():
    model = LaViT(3, 32, SIZES["small"]).eval()
    seen: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, (LessAttention, VanillaAttention)):
            mod.register_forward_hook(lambda m, args, out, name=name: seen.append((name, args, out)))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for (_, _, prev_out), (name, args, _) in zip(seen, seen[1:]):
        if "blocks.0." in name:
            continue  # a stage's first (VA) layer computes fresh scores
        assert args[1] is prev_out[1]  # the very tensor the previous layer computed
    # identity-initialised Theta and Psi pass the scores through unchanged
    name, args, out = next(s for s in seen if "blocks.1." in s[0])
    assert torch.equal(out[1], args[1])


def test_dp_loss_by_hand():
    eye = torch.eye(2).view(1, 1, 2, 2)
    assert diagonality_preserving_loss(eye).item() == pytest.approx(-0.5)  # (0 + (1-2) + (1-2)) / 4
    assert diagonality_preserving_loss(torch.full((1, 1, 2, 2), 0.5)).item() == pytest.approx(0.0)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert diagonality_preserving_loss(swap).item() == pytest.approx(0.5)
    skew = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert diagonality_preserving_loss(skew).item() == pytest.approx(0.5)  # (2 + (1-2) + (1-0)) / 4
    # batch-averaged before the absolute value: eye and swap average to the uniform map
    assert diagonality_preserving_loss(torch.cat([eye, swap])).item() == pytest.approx(0.0)


def test_dp_loss_reaches_the_gradient_of_any_loss():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    with_dp, without = LaViT(3, 32, SIZES["tiny"]), LaViT(3, 32, SIZES["tiny"], dp_weight=0.0)
    without.load_state_dict(with_dp.state_dict())
    grads = []
    for m in (with_dp, without):
        m(x).pow(2).mean().backward()
        grads.append(m.stages[0].blocks[1].attn.psi.weight.grad.clone())
    # the difference is exactly the gradient of the DP loss alone
    with_dp.zero_grad()
    maps = []
    hook = with_dp.stages[0].blocks[1].attn.register_forward_hook(lambda m, a, out: maps.append(out[2]))
    with_dp.dp_weight = 0.0
    with_dp(x)
    hook.remove()
    diagonality_preserving_loss(maps[0]).backward()
    dp_only = with_dp.stages[0].blocks[1].attn.psi.weight.grad
    assert dp_only.abs().sum() > 0
    assert torch.allclose(grads[0] - grads[1], dp_only, atol=1e-6)


def test_bad_grid_and_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(CfsError, match="grid"):
        LaViT(3, 32, SIZES["tiny"], patch_size=5)  # a 7x7 grid cannot be halved twice
    with pytest.raises(CfsError, match="no such file"):
        testing.plugin_manager().backbones.get("lavit-tiny")(weights=str(tmp_path / "none.pt"))


def test_weights_round_trip(tmp_path):
    pm = testing.plugin_manager()
    a = pm.backbones.get("lavit-tiny")(in_channels=3, image_size=32)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b = pm.backbones.get("lavit-tiny")(in_channels=3, image_size=32, weights=str(tmp_path / "w.pt"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a.eval()(x), b.eval()(x))
    assert a.tokens(x).shape == (2, 4, 256)


def test_lavit_trains_a_class_incremental_strategy():
    result = testing.run("replay", scenario=testing.synthetic_stream(n_classes=4, n_experiences=2, per_class=40,
                                                                     test_per_class=20, size=8),
                         epochs=3, backbone="lavit-tiny", batch_size=16, lr=1e-3, optimizer="adam")
    r = testing.accuracy_matrix(result)
    assert r[0, 0] > 0.9 and r[1, 1] > 0.9, r  # chance is 0.5 within an experience


def informative_patches(n_classes: int = 40, per_class: int = 30, seed: int = 0):
    """3 x 16 x 16 images whose classes differ only in their top-left 4 x 4 corner (loud shared
    noise elsewhere): ProtoNet must learn to look there. Patch 2 gives LaViT its 8 x 8 grid."""
    from cfs.data.arrays import ArrayDataset
    from cfs.data.fewshot import FewShotSplit

    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(n_classes, 3, 16, 16)
    means[:, :, :4, :4] = 3.0 * torch.randn(n_classes, 3, 4, 4, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    noise = 3.0 * torch.randn(len(y), 3, 16, 16, generator=g)
    noise[:, :, :4, :4] *= 0.1
    x = means[y] + noise
    data = ArrayDataset(x, y, [f"c{k}" for k in range(n_classes)])
    splits = {"train": list(range(24)), "val": list(range(24, 30)), "test": list(range(30, 40))}
    return FewShotSplit("patches", data, ArrayDataset(x[:0], y[:0]), (0.0,) * 3, (1.0,) * 3, splits)


def test_lavit_trains_a_few_shot_strategy():
    """ProtoNet meta-trains a LaViT end to end (the DP loss rides along): the episodic loss falls
    by far and meta-test accuracy on unseen classes is well above chance (0.2)."""
    from cfs.config import RunConfig
    from cfs.engine.runner import run_strategy
    from cfs.scenarios.episodic import build_episodic

    spec = {"name": "patches-5w1s", "episodes": {"n_way": 5, "k_shot": 1, "q_query": 5}}
    cfg = RunConfig(scenario="patches-5w1s", strategies=["protonet"], backbone="lavit-tiny", optimizer="adam",
                    lr=3e-4, meta_iterations=60, meta_batch=2, val_interval=20, val_episodes=5, test_episodes=30,
                    device="cpu", seed=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_strategy(testing.plugin_manager(), cfg, "protonet", build_episodic(spec, cfg, informative_patches()),
                              progress=False)
    finally:
        torch.set_num_threads(previous)
    res = result.state.extra["episodic"]
    losses = [loss for _, loss, _ in res.train_log]
    assert losses[-1] < 0.5 * losses[0], losses
    assert sum(res.test_accuracies) / len(res.test_accuracies) > 0.3
    assert result.state.model.backbone.last_dp_loss is not None
