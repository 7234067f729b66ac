"""STN (METHODS.md 3): the global, local and fused distances by hand; the two branches."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cfs.models.heads import IncrementalLinear
from cfs.models.model import ContinualModel
from cfs.scenarios.episodes import EpisodeBatch
from cfs_plugins.stn import (STN, STNOptions, fuse, gaussian_kl_diag, gaussian_kl_full, global_distances,
                             local_distances, stn_vit_tiny)


def test_global_distance_is_squared_euclidean_to_class_token_prototypes():
    support = torch.tensor([[[0.0, 0.0], [2.0, 2.0], [4.0, 0.0]]])  # class 0: 2 shots, class 1: 1
    labels = torch.tensor([[0, 0, 1]])
    query = torch.tensor([[[1.0, 2.0]]])
    # prototypes (1,1) and (4,0): distances 1 and 9 + 4 = 13
    assert global_distances(query, support, labels, 2).tolist() == [[[1.0, 13.0]]]


def test_local_distance_is_kl_of_diagonal_token_gaussians_by_hand():
    # 1-D tokens. query tokens {0, 2}: mu 1, var 1. class 0 tokens {1, 3, 1, 3} (2 shots): mu 2,
    # var 1 -> KL = 1/2 (1 + 1 - 1 + 0) = 0.5. class 1 tokens {0, 4, 0, 4}: mu 2, var 4 ->
    # KL = 1/2 (1/4 + 1/4 - 1 + ln 4) = (ln 4 - 0.5) / 2.
    query = torch.tensor([0.0, 2.0]).view(1, 1, 2, 1)
    support = torch.tensor([[1.0, 3.0], [1.0, 3.0], [0.0, 4.0], [0.0, 4.0]]).view(1, 4, 2, 1)
    labels = torch.tensor([[0, 0, 1, 1]])
    d = local_distances(query, support, labels, 2, eps=0.0)
    assert d[0, 0].tolist() == pytest.approx([0.5, (math.log(4) - 0.5) / 2])
    # the reverse direction KL(class || query): class 1 -> 1/2 (4 + 1 - 1 - ln 4)
    r = local_distances(query, support, labels, 2, eps=0.0, kl="class||query")
    assert r[0, 0, 1].item() == pytest.approx(0.5 * (4 - math.log(4)))


def test_full_covariance_kl_matches_diagonal_kl_on_diagonal_covariances():
    g = torch.Generator().manual_seed(0)
    mu_p, mu_q = torch.randn(3, generator=g), torch.randn(3, generator=g)
    var_p, var_q = torch.rand(3, generator=g) + 0.5, torch.rand(3, generator=g) + 0.5
    full = gaussian_kl_full(mu_p, torch.diag(var_p), mu_q, torch.diag(var_q))
    assert full.item() == pytest.approx(gaussian_kl_diag(mu_p, var_p, mu_q, var_q).item(), rel=1e-5)
    assert gaussian_kl_diag(mu_p, var_p, mu_p, var_p).item() == pytest.approx(0.0, abs=1e-6)


def test_fusion_l2_normalises_each_distance_over_classes():
    d_g = torch.tensor([[[3.0, 4.0]]])
    d_l = torch.tensor([[[0.0, 2.0]]])
    # alpha (0.6, 0.8) + (1 - alpha) (0, 1), alpha = 0.25
    assert torch.allclose(fuse(d_g, d_l, 0.25), torch.tensor([[[0.15, 0.2 + 0.75]]]))


def _episode(g: torch.Generator, n: int = 3, k: int = 1, q: int = 2) -> EpisodeBatch:
    sx, qx = torch.randn(1, n * k, 3, 16, 16, generator=g), torch.randn(1, n * q, 3, 16, 16, generator=g)
    qx = sx.repeat_interleave(q, dim=1) + 1.0 * qx  # queries are noisy copies of their class's shot
    return EpisodeBatch(sx, torch.arange(n).repeat_interleave(k)[None], qx, torch.arange(n).repeat_interleave(q)[None],
                        n, k, q)


def test_two_non_shared_vit_branches_train_and_fit_an_episode():
    torch.manual_seed(0)
    body = stn_vit_tiny(in_channels=3, image_size=16)
    state = SimpleNamespace(model=ContinualModel(body, IncrementalLinear(body.out_dim, 3)))
    stn = STN(STNOptions())
    stn.cfs_before_run(state=state)
    extra = stn.cfs_extra_parameters(state=state)
    assert extra and all(p is not q for p in extra for q in state.model.parameters())
    tasks = _episode(torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(list(state.model.parameters()) + extra, lr=1e-3)
    before_local = [p.detach().clone() for p in extra]
    losses = []
    for _ in range(15):
        loss = stn.cfs_meta_loss(state=state, tasks=tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before_local, extra))  # local branch learns too
    scores = stn.cfs_predict_episode(state=state, tasks=tasks)
    assert scores.shape == (1, 6, 3) and (scores.argmax(-1) == tasks.query_y).float().mean() >= 5 / 6


def test_images_are_resized_to_the_vit_input():
    body = stn_vit_tiny(in_channels=3, image_size=16)
    state = SimpleNamespace(model=ContinualModel(body, IncrementalLinear(body.out_dim, 3)))
    stn = STN()
    stn.cfs_before_run(state=state)
    g = torch.Generator().manual_seed(0)
    tasks = _episode(g)
    big = EpisodeBatch(torch.nn.functional.interpolate(tasks.support_x[0], size=32)[None], tasks.support_y,
                       torch.nn.functional.interpolate(tasks.query_x[0], size=32)[None], tasks.query_y, 3, 1, 2)
    assert stn.cfs_predict_episode(state=state, tasks=big).shape == (1, 6, 3)
