"""The batch transform's AutoAugment and Cutout (the official FSCIL base-session recipe), and
that protocols which do not ask for them are transformed exactly as before."""

from __future__ import annotations

import pytest
import torch

from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError


def _images() -> torch.Tensor:
    return (torch.arange(4 * 3 * 8 * 8) * 37 % 256).to(torch.uint8).view(4, 3, 8, 8)


def test_crop_flip_brightness_unchanged_by_the_new_options():
    # Reference numbers written by the implementation before AutoAugment/Cutout existed (same
    # input, generator seed 123): a protocol without the new keys must give the same batch and
    # leave the generator where it did (next draw 0.1185683...).
    t = BatchTransform((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop_padding=2, flip=True, brightness=0.3)
    g = torch.Generator().manual_seed(123)
    y = t(_images(), train=True, generator=g)
    assert y.double().sum().item() == pytest.approx(-397.002855689032, rel=1e-9)
    assert y.double().pow(2).sum().item() == pytest.approx(1427.2142471905, rel=1e-9)
    assert y[1, 2, 3].tolist() == pytest.approx([-0.978614866733551, -0.5829890966415405, -0.1873633712530136,
                                                 0.20826229453086853, 0.6038880944252014, 0.9995138049125671,
                                                 -1.0, -1.0], abs=1e-6)
    assert torch.rand(1, generator=g).item() == pytest.approx(0.1185683012008667, abs=1e-7)


def test_cutout_zeroes_one_clipped_square_per_image_by_hand():
    b, h, w, size = 64, 10, 12, 4
    t = BatchTransform((0.0,), (1.0,), cutout=size)
    x = torch.full((b, 1, h, w), 255, dtype=torch.uint8)
    y = t(x, train=True, generator=torch.Generator().manual_seed(5))
    # the same draws by hand: centre row then column uniformly, square rows [cy - 2, cy + 2) clipped
    g = torch.Generator().manual_seed(5)
    cy = (torch.rand(b, generator=g) * h).long().tolist()
    cx = (torch.rand(b, generator=g) * w).long().tolist()
    for i in range(b):
        want = torch.ones(h, w)
        want[max(cy[i] - 2, 0):min(cy[i] + 2, h), max(cx[i] - 2, 0):min(cx[i] + 2, w)] = 0
        assert torch.equal(y[i, 0], want)
    zeros = (y == 0).flatten(1).sum(1)
    assert zeros.max().item() == size * size and zeros.min().item() < size * size  # some clipped at a border
    assert len({(a, c) for a, c in zip(cy, cx)}) > 10  # each image its own square
    assert torch.equal(t(x), torch.ones(b, 1, h, w))  # no cutout at test time


def test_autoaugment_is_per_image_seeded_and_leaves_the_global_rng_alone():
    t = BatchTransform((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), autoaugment="cifar10")
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x.expand(32, -1, -1, -1).contiguous()  # 32 copies of one image
    state = torch.get_rng_state()
    a = t(x, train=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    b = t(x, train=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # reproducible from the run's generator
    c = t(x, train=True, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)
    distinct = {tuple(img.flatten().tolist()) for img in a}
    assert len(distinct) > 5  # policies drawn per image, not one for the batch
    assert torch.equal((a * 255).round() / 255, a)  # uint8 pixels throughout
    assert torch.equal(t(x), x.float() / 255)  # test transform untouched


def test_autoaugment_needs_uint8_and_a_known_policy():
    t = BatchTransform((0.0,), (1.0,), autoaugment="cifar10")
    with pytest.raises(CfsError, match="uint8"):
        t(torch.rand(2, 1, 8, 8), train=True)
    with pytest.raises(CfsError, match="policy"):
        BatchTransform((0.0,), (1.0,), autoaugment="imagenet-v9")
    with pytest.raises(CfsError, match="cutout"):
        BatchTransform((0.0,), (1.0,), cutout=-1)


def test_official_fscil_protocol_asks_for_the_recipe_and_the_default_one_does_not():
    from cfs.plugins import get_plugin_manager
    from cfs.scenarios.builtin import transform_for

    class Data:
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    pm = get_plugin_manager([])
    official = pm.scenarios.get("fscil-cifar100-official")
    tr = transform_for(official.spec, Data())
    assert (tr.crop_padding, tr.flip, tr.autoaugment, tr.cutout) == (4, True, "cifar10", 16)
    assert official.defaults["epochs"] == 600 and official.defaults["schedule"] == "cosine"
    plain = transform_for(pm.scenarios.get("fscil-cifar100").spec, Data())
    assert (plain.crop_padding, plain.flip, plain.autoaugment, plain.cutout) == (4, True, None, 0)
