"""cfs.models.peft: SSF and BatchNorm re-estimation on any torch backbone (APER's CNN variants)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from cfs.models.backbones import mlp, resnet32, timm_backbone
from cfs.models.peft import backbone_family, bn_adapt, estimate_bn, ssf, ssf_targets


def _lite0():
    return timm_backbone("efficientnet_lite0", in_channels=3, image_size=32)


@pytest.mark.parametrize("build", [lambda: resnet32(3, 32), _lite0], ids=["resnet32", "efficientnet_lite0"])
def test_ssf_starts_as_identity_trains_only_its_parameters_and_changes_features(build):
    torch.manual_seed(0)
    net = build().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters()}
    params = ssf(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert n_bn > 0 and len(params) == 2 * n_bn  # one scale and one shift after every BatchNorm
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-6)  # identity at initialisation
    # a few SGD steps on a feature-moving objective: the features change by far more than 1e-5,
    # the frozen weights do not move at all
    opt = torch.optim.SGD(params, lr=0.05)
    target = torch.randn_like(before)
    for _ in range(3):
        loss = ((net(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = net(x)
    assert ((after - before).norm() / before.norm()).item() > 1e-2
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)
    # the SSF parameters are part of the state and survive deepcopy (the hook goes with the layer)
    assert any(k.endswith("ssf_scale") for k in net.state_dict())
    twin = copy.deepcopy(net)
    with torch.no_grad():
        assert torch.equal(twin(x), after)
    with pytest.raises(ValueError, match="already"):
        ssf(net)


def test_ssf_scale_and_shift_act_per_channel_after_batchnorm():
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2)).eval()
    ssf(net)
    bn = net[1]
    with torch.no_grad():
        bn.ssf_scale.copy_(torch.tensor([2.0, -1.0]))
        bn.ssf_shift.copy_(torch.tensor([0.5, 3.0]))
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        plain = nn.functional.batch_norm(net[0](x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False,
                                         0.0, bn.eps)
        out = net(x)
    assert torch.allclose(out[:, 0], 2 * plain[:, 0] + 0.5, atol=1e-6)
    assert torch.allclose(out[:, 1], -plain[:, 1] + 3.0, atol=1e-6)


def test_ssf_without_batchnorm_follows_linear_layers():
    net = mlp(1, 4, hidden=8)
    targets = ssf_targets(net)
    assert targets and all(isinstance(m, nn.Linear) for m in targets)
    params = ssf(net)
    assert [p.shape for p in params] == [torch.Size([8])] * 4


def test_bn_adapt_reestimates_running_statistics_as_the_exact_mean():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 1)
    net = nn.Sequential(conv, nn.BatchNorm2d(3)).eval()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(7.0)
    weight = bn.weight.detach().clone()
    params = bn_adapt(net)
    assert params == [] and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    batches = [torch.randn(8, 1, 4, 4) * 3 + 2 for _ in range(5)]
    estimate_bn(net, batches)
    assert not net.training
    with torch.no_grad():
        acts = [conv(b) for b in batches]
    mean = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    var = torch.stack([a.var((0, 2, 3), unbiased=True) for a in acts]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-4)
    assert torch.equal(bn.weight, weight)  # affine untouched
    # the new statistics change the eval-mode output drastically
    net2 = nn.Sequential(copy.deepcopy(conv), nn.BatchNorm2d(3)).eval()
    net2[1].running_mean.fill_(5.0)
    net2[1].running_var.fill_(7.0)
    with torch.no_grad():
        a, b = net(batches[0]), net2(batches[0])
    assert ((a - b).norm() / b.norm()).item() > 0.5
    # optional affine training
    net3 = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    params = bn_adapt(net3, affine=True)
    assert {id(p) for p in params} == {id(net3[1].weight), id(net3[1].bias)}
    assert [p for p in net3.parameters() if p.requires_grad] == params


def test_bn_adapt_needs_batchnorm():
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_adapt(mlp(1, 4))


def test_backbone_family():
    assert backbone_family(resnet32(3, 32)) == "cnn"
    assert backbone_family(_lite0()) == "cnn"
    assert backbone_family(mlp(1, 4)) == "other"
    vit = timm_backbone("vit_tiny_patch16_224", in_channels=3, image_size=32, img_size=32, patch_size=8)
    assert backbone_family(vit) == "vit"


def test_ssf_state_round_trip():
    torch.manual_seed(0)
    net = resnet32(3, 32)
    params = ssf(net)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    fresh = resnet32(3, 32)  # other random weights: everything comes from the state dict
    ssf(fresh)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), net.eval()(x))


def _tiny_vit():
    return timm_backbone("vit_tiny_patch16_224", in_channels=3, image_size=32, img_size=32, patch_size=8, depth=2)


def test_adaptformer_sits_parallel_to_every_mlp_and_trains_alone():
    from cfs.models.peft import adaptformer

    torch.manual_seed(0)
    net = _tiny_vit().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    names_before = set(net.state_dict())
    params = adaptformer(net)
    blocks = net.model.blocks
    assert len(params) == 4 * len(blocks)  # down/up weight and bias per block
    assert {id(p) for p in net.parameters() if p.requires_grad} == {id(p) for p in params}
    assert names_before <= set(net.state_dict())  # the pre-trained parameter names are kept
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-6)  # up = 0: identity at initialisation
    # by hand: block output = x + mlp(norm2(x)) + scale * up(relu(down(x))), x after attention
    b = blocks[0]
    with torch.no_grad():
        b.drop_path2.adapter.up.weight.normal_()
        t = torch.randn(2, 17, b.norm2.normalized_shape[0])
        mid = t + b.attn(b.norm1(t))
        a = b.drop_path2.adapter
        expect = mid + b.mlp(b.norm2(mid)) + 0.1 * a.up(torch.relu(a.down(mid)))
        assert torch.allclose(b(t), expect, atol=1e-5)
        changed = net(x)
    assert ((changed - before).norm() / before.norm()).item() > 1e-2
    twin = copy.deepcopy(net)  # the copy's adapters read the copy's norm2 inputs
    with torch.no_grad():
        twin.model.blocks[1].drop_path2.adapter.up.weight.normal_()
        assert not torch.allclose(twin(x), net(x))
        assert torch.equal(copy.deepcopy(net)(x), net(x))


def test_adapter_sets_switch_per_forward_and_train_only_the_newest_set():
    from cfs.models.peft import AdapterSets

    torch.manual_seed(0)
    net = _tiny_vit().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = net(x)
    sets = AdapterSets(net)
    first = sets.add()
    assert len(sets) == 1 and {id(p) for p in net.parameters() if p.requires_grad} == {id(p) for p in first}
    with torch.no_grad():
        assert torch.allclose(net(x), plain, atol=1e-6)  # a fresh set is the identity (up = 0)
        for p in first[2::4]:  # the up-projections' weights (down.weight, down.bias, up.weight, up.bias)
            p.normal_()
        one = net(x)
    assert not torch.allclose(one, plain, atol=1e-3)
    second = sets.add()  # the first set freezes, the new one is active and trains alone
    assert not any(p.requires_grad for p in first) and all(p.requires_grad for p in second)
    net(x).sum().backward()
    assert all(p.grad is None for p in first) and any(p.grad is not None for p in second)
    with torch.no_grad():
        assert torch.allclose(net(x), plain, atol=1e-6)
        sets.use(0)
        assert torch.equal(net(x), one)
        sets.use(None)
        assert torch.equal(net(x), plain)
    with pytest.raises(IndexError):
        sets.use(2)
