"""Backbone shapes, token access and growing heads."""

import pytest
import torch

from cfs.models.backbones import conv4, mlp, reduced_resnet18, resnet32, timm_backbone
from cfs.models.heads import CosineHead, IncrementalLinear


@pytest.mark.parametrize("factory,dim", [(resnet32, 64), (reduced_resnet18, 160)])
def test_cifar_backbones(factory, dim):
    net = factory(3, 32)
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, dim) and net.out_dim == dim
    assert net.tokens(x).shape == (2, 64 if factory is resnet32 else 16, dim)


def test_resnet32_depth():
    convs = [m for m in resnet32(3, 32).modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 31  # + the final linear layer = 32 weighted layers


def test_conv4_and_mlp():
    assert conv4(3, 84).out_dim == 1600
    assert mlp(1, 8)(torch.randn(4, 1, 8, 8)).shape == (4, 256)


def test_timm_by_name():
    net = timm_backbone("resnet18", in_channels=3, image_size=32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert net.tokens(torch.randn(2, 3, 64, 64)).shape == (2, 4, 512)


def test_linear_head_grows_keeping_old_rows():
    head = IncrementalLinear(5, 2)
    old_w, old_b = head.weight.detach().clone(), head.bias.detach().clone()
    head.expand(3)
    assert head.out_features == 5
    assert torch.equal(head.weight[:2], old_w) and torch.equal(head.bias[:2], old_b)


def test_cosine_head_is_scaled_cosine():
    head = CosineHead(3, 2, scale=16.0)
    head.weight.data = torch.tensor([[1.0, 0, 0], [0, 2.0, 0]])
    out = head(torch.tensor([[3.0, 0, 0], [1.0, 1.0, 0]]))
    expected = 16 * torch.tensor([[1.0, 0.0], [2**-0.5, 2**-0.5]])
    assert torch.allclose(out, expected, atol=1e-5)
    head.expand(1)
    assert head.out_features == 3


def test_local_checkpoint_is_unwrapped_and_checked(tmp_path):
    import pytest

    from cfs.errors import CfsError

    source = timm_backbone("resnet18", in_channels=3, image_size=32)
    path = tmp_path / "ckpt.pth"
    torch.save({"teacher": {f"module.{k}": v for k, v in source.model.state_dict().items()}}, path)
    loaded = timm_backbone("resnet18", in_channels=3, image_size=32, weights=str(path))
    for k, v in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    torch.save({"unrelated.weight": torch.zeros(3)}, path)
    with pytest.raises(CfsError, match="matches only 0"):
        timm_backbone("resnet18", in_channels=3, image_size=32, weights=str(path))
    with pytest.raises(CfsError, match="no such file"):
        timm_backbone("resnet18", in_channels=3, image_size=32, weights=str(tmp_path / "missing.pth"))


def test_conv4_refuses_images_its_four_poolings_would_empty():
    from cfs.errors import CfsError

    with pytest.raises(CfsError, match="at least 16x16"):
        conv4(in_channels=1, image_size=8)
    assert conv4(in_channels=1, image_size=16)(torch.zeros(2, 1, 16, 16)).shape == (2, 64)
