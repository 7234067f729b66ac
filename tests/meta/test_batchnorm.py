"""BatchStatNorm computes torch's training-mode batch norm and, unlike the fused kernel under
vmap, gives the right second-order gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from cfs.meta.batchnorm import BatchStatNorm, use_batch_statistics


def test_matches_functional_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    w, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    bn = BatchStatNorm(3).double()
    bn.weight.data, bn.bias.data = w.clone(), b.clone()
    ref = F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    torch.testing.assert_close(bn(x), ref)
    x2 = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(BatchStatNorm(7, affine=False).double()(x2), F.batch_norm(x2, None, None, training=True))


def test_second_order_under_vmap_equals_loop():
    """d/dw of sum_t ||grad_x f_t||^2 computed with vmap over t equals a loop over t."""
    torch.manual_seed(0)
    xs = torch.randn(3, 5, 2, dtype=torch.float64)
    norm = BatchStatNorm(2).double()

    def inner(x, w, b):
        return (torch.func.functional_call(norm, {"weight": w, "bias": b}, (x,)) ** 3).sum()

    def outer(x, w, b):
        return grad(inner)(x, w, b).pow(2).sum()

    w = torch.randn(2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    gv = torch.autograd.grad(vmap(outer, in_dims=(0, None, None))(xs, w, b).sum(), (w, b))
    gl = torch.autograd.grad(sum(outer(x, w, b) for x in xs), (w, b))
    for a, c in zip(gv, gl):
        torch.testing.assert_close(a, c)


def test_swaps_nested_batchnorm_layers_and_keeps_parameters():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.BatchNorm2d(2), nn.ReLU()), nn.BatchNorm1d(4))
    weight = model[1][0].weight
    use_batch_statistics(model)
    assert isinstance(model[1][0], BatchStatNorm) and isinstance(model[2], BatchStatNorm)
    assert model[1][0].weight is weight
    assert not list(model.buffers())
