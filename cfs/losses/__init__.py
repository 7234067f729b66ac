"""Distillation losses as plain functions of tensors (no model, no state).

Each function is what a paper's equation computes, tested against hand-computed values in
``tests/losses``; the continual regularizer plugins (``plugins/kd.py`` ...) and ``cfs distill``
wrap them. Inputs are student and teacher tensors of the same batch; the teacher side is
detached inside every function, so a teacher never receives a gradient.
"""

from cfs.losses.clkd import class_correlation, clkd_loss
from cfs.losses.kd import kd_loss, new_class_cross_entropy, soft_cross_entropy
from cfs.losses.nckd import ClassMeanEMA, centred_directions, class_means, nc1_loss, nc2_loss, nc3_logits
from cfs.losses.pckd import category_contrastive_loss, feature_alignment_loss, pckd_preview_weights, supcon_loss
from cfs.losses.trg import contextual_loss, graph_loss, node_loss, trg_loss

__all__ = [
    "ClassMeanEMA",
    "category_contrastive_loss",
    "centred_directions",
    "class_means",
    "class_correlation",
    "clkd_loss",
    "contextual_loss",
    "feature_alignment_loss",
    "graph_loss",
    "kd_loss",
    "nc1_loss",
    "nc2_loss",
    "nc3_logits",
    "new_class_cross_entropy",
    "node_loss",
    "pckd_preview_weights",
    "soft_cross_entropy",
    "supcon_loss",
    "trg_loss",
]
