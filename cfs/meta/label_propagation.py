"""Transductive label propagation (TPN, Liu et al. ICLR 2019) as GP-MAML uses it.

METHODS.md section 2.2 step 2 [CODE]: scale each embedding by its own sigma (from the
relation network psi), Gaussian affinity W_ij = exp(-1/2 mean_d (e_i/s_i - e_j/s_j)^2), keep
the top-k entries of every row and symmetrize by union, normalise S = D^-1/2 W D^-1/2 and
propagate F = (I - a S)^-1 Y with one-hot support rows and zero query rows. Plain functions of
tensors, so each step has a hand-computed test.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cfs.meta.batchnorm import BatchStatNorm

EPS = torch.finfo(torch.float64).eps  # TPN: np.finfo(float).eps


def topk_affinity(emb: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """(M, D) embeddings, (M, 1) scales -> the (M, M) sparsified symmetric affinity.

    Row i keeps its ``k`` largest entries (itself included, as in TPN); an edge survives when
    either endpoint kept it. ``k >= M`` keeps the dense graph."""
    e = emb / (sigma + EPS)
    w = torch.exp(-0.5 * (e.unsqueeze(1) - e.unsqueeze(0)).pow(2).mean(-1))
    k = min(k, w.shape[0])
    if k < w.shape[0]:
        idx = w.topk(k, dim=1).indices
        mask = torch.zeros_like(w).scatter(1, idx, 1.0)
        w = w * ((mask + mask.t()) > 0).to(w.dtype)
    return w


def label_propagation(emb: torch.Tensor, sigma: torch.Tensor, support_y: torch.Tensor, n_way: int,
                      k: int = 20, alpha: float = 0.99) -> torch.Tensor:
    """Propagated label scores F (M, n_way) for support-then-query rows of ``emb``.

    ``support_y`` labels the first ``len(support_y)`` rows; the rest are queries. The TPN loss is
    ``cross_entropy(F, y_all)``; query pseudo-labels are ``F[n_support:].argmax(1)``."""
    w = topk_affinity(emb, sigma, k)
    d_inv_sqrt = (w.sum(0) + EPS).rsqrt()
    s = d_inv_sqrt.unsqueeze(1) * w * d_inv_sqrt.unsqueeze(0)
    m = w.shape[0]
    y = torch.zeros(m, n_way, dtype=emb.dtype, device=emb.device)
    y[: support_y.shape[0]] = F.one_hot(support_y, n_way).to(emb.dtype)
    eye = torch.eye(m, dtype=emb.dtype, device=emb.device)
    return torch.linalg.solve(eye - alpha * s, y)


class RelationScale(nn.Module):
    """psi: the per-example scale network of TPN (``RelationNetwork``), trained jointly.

    Two conv blocks [3x3 conv, BN, ReLU, 2x2 max-pool with padding 1] (C -> C -> 1 channels),
    then FC(h*w -> 8) -> ReLU -> FC(8 -> 1). TPN's 84x84 Conv-4 map is 64x5x5, giving FC(4 -> 8);
    the FC input follows the actual map size (1 at Omniglot's 28x28). BN uses batch statistics
    (no running buffers), like the classifier's, in meta-training and at test time alike.
    """

    def __init__(self, channels: int, side: int, positive: bool = False) -> None:
        super().__init__()
        self.positive = positive

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), BatchStatNorm(cout),
                                 nn.ReLU(), nn.MaxPool2d(2, padding=1))

        self.layer1 = block(channels, channels)
        self.layer2 = block(channels, 1)
        out = side
        for _ in range(2):
            out = out // 2 + 1  # MaxPool2d(2, padding=1): floor((s + 2 - 2) / 2) + 1
        self.fc3 = nn.Linear(out * out, 8)
        self.fc4 = nn.Linear(8, 1)
        self.side = side

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(M, C, h, w) feature maps -> (M, 1) scales: unconstrained as in TPN's code, or with
        ``positive`` softplus(.) + 0.1, which keeps e / sigma finite when the raw scale nears 0."""
        out = self.layer2(self.layer1(fmap)).flatten(1)
        sigma = self.fc4(F.relu(self.fc3(out)))
        return F.softplus(sigma) + 0.1 if self.positive else sigma


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """(M, h*w, C) backbone tokens -> (M, C, h, w) feature maps (square maps)."""
    m, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"cannot fold {n} tokens into a square feature map")
    return tokens.transpose(1, 2).reshape(m, c, side, side)
