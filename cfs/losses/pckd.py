"""PCKD (Ding et al., TCSVT 2025; official code MuHeDing/PCKD; METHODS.md 7).

Feature alignment (BYOL-style cosine regression), category contrast between instances and
category centres (the classifier weights), and the "preview" weights that shrink the loss of
hard samples instead of dropping them. The logit KD term is :func:`cfs.losses.kd.kd_loss`
with ``reduction="none"``; the centre alignment is an MSE of the two heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
