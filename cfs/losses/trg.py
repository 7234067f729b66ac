"""TRG (Zhang, Liu, He 2023; METHODS.md 6): token-level relationship graph and contextual loss.

Tokens are (B, N, D) (last CNN feature map positions or ViT patch tokens), already projected
to the teacher's dimension. ``graph_loss`` compares, for every token of the batch, its
distribution of cosine similarities to all other tokens of the batch (inter-instance);
``contextual_loss`` is Mechrez et al.'s contextual loss between a student image's tokens and
the teacher's (intra-instance); ``node_loss`` regresses normalised tokens directly. The
forms are METHODS.md's [PROPOSED] reading of the abstract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def graph_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """``(1/M) sum_r KL(P^T_r || P^S_r)``, ``P = softmax(cos / tau)`` over the other M-1 nodes.

    ``student``/``teacher`` are (M, D) token sets (the batch's tokens flattened)."""
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.detach().float(), dim=1)
    m = s.shape[0]
    off = ~torch.eye(m, dtype=torch.bool, device=s.device)
    a_s = (s @ s.T / tau)[off].view(m, m - 1)
    a_t = (t @ t.T / tau)[off].view(m, m - 1)
    log_p_t, log_p_s = F.log_softmax(a_t, dim=1), F.log_softmax(a_s, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def node_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``(1/M) sum_r || t^S_r - t^T_r ||^2`` on L2-normalised (M, D) tokens."""
    return (F.normalize(student.float(), dim=1) - F.normalize(teacher.detach().float(), dim=1)).pow(2).sum(1).mean()


def contextual_loss(student: torch.Tensor, teacher: torch.Tensor, h: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """Mechrez et al.'s contextual loss over (B, N, D) token sets: ``(1/B) sum_b -log CX_b``.

    With student tokens ``x_i`` (i indexes the student) and teacher tokens ``y_j`` (j indexes
    the teacher) of one image, both centred by the teacher mean ``mu_Y`` (METHODS.md 6.2, axes
    as corrected after review against Mechrez et al. 2018, Eq. 1-4). Checked against the widely
    used PyTorch port of the authors' code (the contextual-loss gist most TRG-era code copies):
    the same axes (relative distance and normalisation over the target index, max over the
    source index, mean over the target), centring by the target's mean (there over the batch
    too; here per image), ``h = 0.5`` and ``eps = 1e-5`` in the relative distance. Departure:
    no ``+ 1e-5`` inside the log (CX_b >= 1/N_Y > 0 already).

    - ``d_ij = 1 - cos(x_i - mu_Y, y_j - mu_Y)``;
    - ``d~_ij = d_ij / (min_k d_ik + eps)``: relative to student token i's closest teacher token;
    - ``w_ij = exp((1 - d~_ij) / h)``; ``CX_ij = w_ij / sum_k w_ik`` (over the teacher index);
    - ``CX_b = (1/N_Y) sum_j max_i CX_ij``: every teacher token looks for a student token that
      matches it, so student tokens collapsed onto one teacher token leave the others unmatched
      (``CX_b = 1/N``, loss ``log N``), and identical sets give ``CX_b = 1`` (loss 0).

    Student and teacher may hold different numbers of tokens.
    """
    y = teacher.detach().float()
    x = student.float()
    mu = y.mean(1, keepdim=True)
    xn = F.normalize(x - mu, dim=2)
    yn = F.normalize(y - mu, dim=2)
    d = (1 - xn @ yn.transpose(1, 2)).clamp(min=0)  # (B, N_x, N_y): rows i student, columns j teacher
    d_rel = d / (d.min(dim=2, keepdim=True).values + eps)
    cx = torch.softmax((1 - d_rel) / h, dim=2)  # = w_ij / sum_k w_ik, without overflow
    cx_b = cx.max(dim=1).values.mean(1)
    return -torch.log(cx_b).mean()


class TokenProjector(nn.Module):
    """METHODS.md 6.2's student projector for tokens: linear to the teacher's width, then
    BatchNorm over the channels (statistics over all tokens of the batch). (B, N, D_s) -> (B, N, D_t)."""

    def __init__(self, d_student: int, d_teacher: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_student, d_teacher)
        self.bn = nn.BatchNorm1d(d_teacher)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        z = self.linear(tokens)
        return self.bn(z.reshape(b * n, -1)).view(b, n, -1)


def affinity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The simpler intra-image fallback: ``(1/B) sum_b ||A^S_b - A^T_b||_F^2 / N^2``."""
    s = F.normalize(student.float(), dim=2)
    t = F.normalize(teacher.detach().float(), dim=2)
    n = s.shape[1]
    return (s @ s.transpose(1, 2) - t @ t.transpose(1, 2)).pow(2).sum((1, 2)).mean() / (n * n)


def sample_tokens(student: torch.Tensor, teacher: torch.Tensor, max_nodes: int = 4096, per_image: int = 16,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten (B, N, D) to (B*N, D) graph nodes; above ``max_nodes``, keep ``per_image``
    random token positions per image (the same positions for student and teacher)."""
    b, n, _ = student.shape
    if b * n > max_nodes and n > per_image:
        dev = generator.device if generator is not None else student.device
        keep = torch.rand(b, n, generator=generator, device=dev).argsort(1)[:, :per_image].to(student.device)
        idx = keep.unsqueeze(2)
        student = student.gather(1, idx.expand(-1, -1, student.shape[2]))
        teacher = teacher.gather(1, idx.expand(-1, -1, teacher.shape[2]))
    return student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])


def align_tokens(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger square (B, N, D) token grid to the smaller one (METHODS.md 6.2),
    so a student and a teacher of different resolutions have token sets to compare."""
    if student.shape[1] == teacher.shape[1]:
        return student, teacher

    def pool(tok: torch.Tensor, n: int) -> torch.Tensor:
        b, m, d = tok.shape
        grid = tok.transpose(1, 2).reshape(b, d, *(2 * [int(round(m ** 0.5))]))
        return F.adaptive_avg_pool2d(grid, int(round(n ** 0.5))).flatten(2).transpose(1, 2)

    if student.shape[1] > teacher.shape[1]:
        return pool(student, teacher.shape[1]), teacher
    return student, pool(teacher, student.shape[1])


def trg_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, graph: float = 1.0, context: float = 1.0,
             node: float = 1.0, tau: float = 0.1, context_form: str = "cx",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``graph * L_graph + context * L_ctx + node * L_node`` (the logit KD term is the caller's)."""
    total = student_tokens.new_zeros((), dtype=torch.float32)
    if graph or node:
        s, t = sample_tokens(student_tokens, teacher_tokens, generator=generator)
        if graph:
            total = total + graph * graph_loss(s, t, tau)
        if node:
            total = total + node * node_loss(s, t)
    if context:
        if context_form == "cx":
            total = total + context * contextual_loss(student_tokens, teacher_tokens)
        elif context_form == "affinity":
            total = total + context * affinity_loss(student_tokens, teacher_tokens)
        else:
            raise ValueError(f"unknown context form {context_form!r} (use 'cx' or 'affinity')")
    return total
