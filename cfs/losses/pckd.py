"""PCKD (Ding et al., TCSVT 2025; official code MuHeDing/PCKD; METHODS.md 7).

Feature alignment (BYOL-style cosine regression), category contrast between instances and
category centres (the classifier weights), and the "preview" weights that shrink the loss of
hard samples instead of dropping them. The logit KD term is :func:`cfs.losses.kd.kd_loss`
with ``reduction="none"``; the centre alignment is an MSE of the two heads.

:func:`pckd_loss` combines the terms for one batch; the ``pckd`` strategy (previous model as
teacher) and ``cfs distill --loss pckd`` (a trained teacher) both call it, with the modules it
needs (:class:`PCKDHeads`) and the rotated views (:func:`rotated_views`) defined here once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cfs.losses.kd import kd_loss


def feature_alignment_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 mean_i cos(p_i, f^T_i)`` (p = MLP projection of the student feature)."""
    return 2 - 2 * F.cosine_similarity(prediction.float(), target.detach().float(), dim=1).mean()


def supcon_loss(anchors: torch.Tensor, labels: torch.Tensor, tau: float = 4.0, base_tau: float = 0.07) -> torch.Tensor:
    """Per-anchor supervised contrastive loss (Khosla et al.), as PCKD's code uses it:

    ``l_a = -(tau/base_tau) (1/|P(a)|) sum_{p in P(a)} log(exp(a.p/tau) / sum_{k != a} exp(a.k/tau))``
    with positives ``P(a)`` the other anchors of the same label; an anchor without a positive
    gets 0. Returns the (A,) vector of ``l_a``.
    """
    a = anchors.float()
    n = a.shape[0]
    logits = a @ a.T / tau
    self_mask = torch.eye(n, dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    n_pos = pos.sum(1)
    mean_log_prob = log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
    return -(tau / base_tau) * mean_log_prob * (n_pos > 0)


def category_contrastive_loss(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, tau: float = 4.0,
                              base_tau: float = 0.07) -> torch.Tensor:
    """``L_con,i = l_{u_i} + l_{v_i}`` over the anchor set ``{u_1..u_M, v_1..v_M}``; (M,) vector.

    ``u_i = W^S E_s(f_i)`` and ``v_i = W^T E_t(f_i)`` are category-similarity vectors (student
    and teacher centres); they must have the same length."""
    m = u.shape[0]
    per_anchor = supcon_loss(torch.cat([u, v]), torch.cat([labels, labels]), tau, base_tau)
    return per_anchor[:m] + per_anchor[m:]


def pckd_preview_weights(ce_per_sample: torch.Tensor, epoch: int, base: float = 1.005,
                         detach: bool = True) -> torch.Tensor:
    """``w_i = 1`` if ``r_i <= base**epoch`` else ``exp(-r_i^2)``, ``r_i = CE_i / mean(CE)``;
    ``epoch`` is 1-based. ``detach=False`` keeps the gradient through ``w`` (the code's KD term)."""
    ce = ce_per_sample.detach() if detach else ce_per_sample
    r = ce / ce.mean().clamp(min=1e-12)
    threshold = math.pow(base, epoch)
    return torch.where(r <= threshold, torch.ones_like(r), torch.exp(-r * r))


class PCKDHeads(nn.Module):
    """The student-side modules PCKD trains: the alignment MLP (hidden 16 d_T) and the two
    embedding heads ``E_s`` (to the student's width) and ``E_t`` (to the teacher's)."""

    def __init__(self, d_s: int, d_t: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_s, 16 * d_t), nn.BatchNorm1d(16 * d_t), nn.ReLU(), nn.Linear(16 * d_t, d_t))
        self.embed_s = nn.Linear(d_s, d_s)
        self.embed_t = nn.Linear(d_s, d_t)


def rotated_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """``views`` copies of the (B, C, H, W) batch rotated by 0, 90, 180, 270 degrees, view-major."""
    return torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(views)])


def view_features(model: nn.Module, x: torch.Tensor, features: torch.Tensor, views: int) -> torch.Tensor:
    """(V*B, D) features of all ``views`` of the batch, view-major: ``features`` (view 0, already
    computed by the training step) followed by ``model``'s features of the rotated copies."""
    if views == 1:
        return features
    rotated, _ = model.forward_all(torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(1, views)]))
    return torch.cat([features, rotated])


def head_matrix(head: nn.Module, rows: int) -> torch.Tensor:
    """``[W | b]`` of the first ``rows`` classes (no bias column for a cosine head)."""
    w = head.weight[:rows]
    b = getattr(head, "bias", None)
    return w if b is None else torch.cat([w, b[:rows].unsqueeze(1)], 1)


def pckd_loss(heads: PCKDHeads, student_features: torch.Tensor, student_logits: torch.Tensor, y: torch.Tensor,
              teacher_features: torch.Tensor, teacher_logits: torch.Tensor, student_head: nn.Module,
              teacher_head: nn.Module, n_old: int, epoch: int, *, delta: float = 1.0, beta: float = 0.1,
              alpha: float = 1.0, phi: float = 1.0, T: float = 4.0, tau: float = 4.0, base_tau: float = 0.07,
              detach_weights: bool = True) -> torch.Tensor:
    """``delta mean_i w_i KL_i + beta mean_{i,views} w_i L_con,i + alpha L_W + phi L_align`` for
    a batch of B samples seen in V views (METHODS.md 7; defaults are its proposal).

    ``student_features`` and ``teacher_features`` are the (V*B, .) features of the views
    (view-major, view 0 first), ``student_logits`` the (B, C) logits of view 0 (its CE gives the
    preview weights ``w``, ``epoch`` is 1-based), ``teacher_logits`` the (V*B, n_old) teacher
    logits. The centres are the first ``n_old`` rows of both heads, the classes the teacher knows.
    """
    b = len(y)
    views = student_features.shape[0] // b
    ce = F.cross_entropy(student_logits.float(), y, reduction="none")
    w = pckd_preview_weights(ce, epoch, detach=detach_weights)
    loss = delta * (w * kd_loss(student_logits[:, :n_old], teacher_logits[:b], T, reduction="none")).mean()
    u = F.normalize(heads.embed_s(student_features), dim=1) @ student_head.weight[:n_old].T
    v = F.normalize(heads.embed_t(student_features), dim=1) @ teacher_head.weight[:n_old].T
    con = category_contrastive_loss(u, v, y.repeat(views), tau, base_tau)
    loss = loss + beta * (w.detach().repeat(views) * con).mean()
    s_w, t_w = head_matrix(student_head, n_old), head_matrix(teacher_head, n_old)
    if s_w.shape == t_w.shape:
        loss = loss + alpha * F.mse_loss(s_w, t_w)
    return loss + phi * feature_alignment_loss(heads.mlp(student_features), teacher_features)
