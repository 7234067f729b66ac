"""Distillation losses as plain functions of tensors (and the few modules they train).

Each function is what a paper's equation computes, tested against hand-computed values in
``tests/losses``; the continual regularizer plugins (``plugins/kd.py`` ...) call them, and so
do the distillation losses that :mod:`cfs.losses.distill` registers for ``cfs distill``, so
both settings compute one loss from one place. Inputs are student and teacher tensors of the
same batch; the teacher side is detached inside every function, so a teacher never receives a
gradient.
"""

from cfs.losses.clkd import class_correlation, clkd_loss
from cfs.losses.er_ace import er_ace_loss
from cfs.losses.kd import kd_loss, new_class_cross_entropy, soft_cross_entropy
from cfs.losses.nckd import ClassMeanEMA, centred_directions, class_means, nc1_loss, nc2_loss, nc3_logits, nckd_loss
from cfs.losses.pckd import (PCKDHeads, category_contrastive_loss, feature_alignment_loss, head_matrix, pckd_loss,
                             pckd_preview_weights, rotated_views, supcon_loss, view_features)
from cfs.losses.trg import align_tokens, contextual_loss, graph_loss, node_loss, trg_loss

__all__ = [
    "er_ace_loss",
    "ClassMeanEMA",
    "PCKDHeads",
    "align_tokens",
    "category_contrastive_loss",
    "centred_directions",
    "class_means",
    "class_correlation",
    "clkd_loss",
    "contextual_loss",
    "feature_alignment_loss",
    "graph_loss",
    "head_matrix",
    "kd_loss",
    "nc1_loss",
    "nc2_loss",
    "nc3_logits",
    "nckd_loss",
    "new_class_cross_entropy",
    "node_loss",
    "pckd_loss",
    "pckd_preview_weights",
    "rotated_views",
    "soft_cross_entropy",
    "supcon_loss",
    "trg_loss",
    "view_features",
]
