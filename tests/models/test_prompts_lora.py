"""Prompt tuning, prefix tuning and LoRA inside a timm ViT (cfs.models.prompts, cfs.models.lora).

A tiny real ``timm`` VisionTransformer is built directly; the checks are exact where the
mechanism promises identity (nothing inserted, zero-length prompts, LoRA with B = 0) and
hand-computed for prefix attention.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from cfs.models.backbones import TimmBackbone
from cfs.models.lora import lora
from cfs.models.prompts import PromptInputs, find_vit, prompted


@pytest.fixture
def vit() -> TimmBackbone:
    torch.manual_seed(0)
    net = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    with torch.no_grad():  # larger attention weights than timm's init, so attention is far from uniform
        for b in net.blocks:
            b.attn.qkv.weight.normal_(0, 0.3)
    return TimmBackbone(net).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_nothing_inserted_and_zero_length_prompts_give_the_plain_vit_exactly(vit, x):
    ref = vit(x)
    pv = prompted(vit)
    assert prompted(vit) is pv  # installed once
    assert torch.equal(vit(x), ref)
    empty = torch.zeros(len(x), 0, 32)
    with pv.use(PromptInputs(prefixes={0: (empty, empty), 1: (empty, empty)})):
        assert torch.equal(vit(x), ref)
    with pv.use(PromptInputs(tokens={0: empty, 1: empty})):
        assert torch.equal(vit(x), ref)
    with pv.use(PromptInputs(tokens={0: torch.randn(len(x), 4, 32)})):
        assert not torch.allclose(vit(x), ref)
    assert torch.equal(vit(x), ref)  # plain again after the block
    assert set(vit.state_dict()) == set(TimmBackbone(find_vit(vit)).state_dict())  # no parameter added


def test_prefix_attention_matches_a_hand_computed_attention(vit, x):
    pv = prompted(vit)
    attn = vit.model.blocks[1].attn
    pk, pv_ = torch.randn(len(x), 3, 32), torch.randn(len(x), 3, 32)
    seen = {}
    attn.register_forward_hook(lambda m, a, out: seen.update(inp=a[0], out=out))
    with pv.use(PromptInputs(prefixes={1: (pk, pv_)})):
        vit(x)
    h, hd = attn.num_heads, attn.head_dim
    t = seen["inp"]
    q, k, v = F.linear(t, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)
    k, v = torch.cat([pk, k], 1), torch.cat([pv_, v], 1)
    outs = []
    for i in range(h):
        sl = slice(i * hd, (i + 1) * hd)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) * hd**-0.5, dim=-1)
        outs.append(w @ v[..., sl])
    expected = F.linear(torch.cat(outs, -1), attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(seen["out"], expected, rtol=1e-5, atol=1e-5)


def test_prompt_tokens_are_inserted_after_cls_and_deep_prompts_replace_them(vit, x):
    pv = prompted(vit)
    lengths = []
    for b in vit.model.blocks:
        b.register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    first, second = torch.randn(len(x), 5, 32), torch.randn(len(x), 5, 32)
    seen = {}
    vit.model.blocks[1].register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with pv.use(PromptInputs(tokens={0: first, 1: second})):
        vit(x)
    n = 1 + 16  # [CLS] + 4 x 4 patches
    assert lengths[-2:] == [n + 5, n + 5]  # inserted once, then replaced
    assert torch.equal(seen["x"][:, 1:6], second)


def test_pool_prompt_reads_the_mean_of_the_prompt_outputs(vit, x):
    pv = prompted(vit)
    tokens = torch.randn(len(x), 4, 32)
    seen = {}
    vit.model.norm.register_forward_hook(lambda m, a, out: seen.update(out=out))
    with pv.use(PromptInputs(tokens={0: tokens}, pool="prompt")):
        f = vit(x)
    torch.testing.assert_close(f, seen["out"][:, 1:5].mean(1))


def test_only_inserted_parameters_receive_gradients(vit, x):
    pv = prompted(vit)
    vit.requires_grad_(False)
    tokens = torch.randn(len(x), 4, 32, requires_grad=True)
    pk = torch.randn(len(x), 2, 32, requires_grad=True)
    pvals = torch.randn(len(x), 2, 32, requires_grad=True)
    with pv.use(PromptInputs(tokens={0: tokens}, prefixes={1: (pk, pvals)}, pool="prompt")):
        vit(x).square().sum().backward()
    assert all(p.grad is None for p in vit.parameters())
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (tokens, pk, pvals))


def test_lora_with_b_zero_is_the_plain_vit_and_only_lora_trains(vit, x):
    ref = vit(x)
    params = lora(vit, rank=2, alpha=4.0)
    assert len(params) == 2 * 2 * 2  # (A, B) x (qkv, proj) x 2 blocks
    assert torch.equal(vit(x), ref)  # B starts at zero
    assert "model.blocks.0.attn.qkv.weight" in vit.state_dict()  # the layer's own names are kept
    vit(x).square().sum().backward()
    assert all(p.grad is None for n, p in vit.named_parameters() if "lora_" not in n)
    assert all(p.grad is not None for p in params if p.shape[1] == 2)  # every B gets a gradient
    with torch.no_grad():
        for p in params:
            if p.shape[1] == 2:
                p.normal_()
    assert not torch.allclose(vit(x), ref)
    qkv = vit.model.blocks[0].attn.qkv  # the hook adds (alpha / r) B A x
    t = torch.randn(5, 32)
    torch.testing.assert_close(qkv(t), F.linear(t, qkv.weight, qkv.bias) + 2.0 * t @ qkv.lora_A.T @ qkv.lora_B.T)
    assert torch.equal(copy.deepcopy(vit)(x), vit(x))
    with pytest.raises(ValueError, match="already"):
        lora(vit)


def test_misuse_is_a_clear_error(vit, x):
    pv = prompted(vit)
    with pytest.raises(ValueError, match="outside"):
        with pv.use(PromptInputs(tokens={2: torch.zeros(1, 1, 32)})):
            pass
    with pytest.raises(ValueError, match="needs prompt tokens"):
        with pv.use(PromptInputs(pool="prompt")):
            pass
    with pytest.raises(ValueError, match="no timm VisionTransformer"):
        find_vit(torch.nn.Linear(2, 2))
