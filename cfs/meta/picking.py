"""Adaptive, class-balanced picking of pseudo-labelled queries (GP-MAML, METHODS.md 2.2 step 3).

Keep the ``top_p`` most confident queries, group them by pseudo-label, let m be the smallest
group, and take the m most confident of every class: N*m picks, none when some class got no
query. The number picked adapts to how balanced and confident the propagation is; there is no
probability threshold.
"""

from __future__ import annotations

import torch


def class_balanced_pick(scores: torch.Tensor, n_way: int, top_p: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` (Q, N) propagated query scores -> (indices, pseudo-labels) of the picks.

    Confidence is ``max softmax(scores)``; ties keep query order. Picks are returned class by
    class, most confident first within a class. ``top_p=None`` keeps every query."""
    with torch.no_grad():
        conf, labels = scores.softmax(-1).max(-1)
        order = torch.sort(conf, descending=True, stable=True).indices
        if top_p is not None:
            order = order[:top_p]
        kept = labels[order]
        per_class = [order[kept == c] for c in range(n_way)]
        m = min(len(idx) for idx in per_class)
        if m == 0:
            empty = torch.zeros(0, dtype=torch.long, device=scores.device)
            return empty, empty
        idx = torch.cat([c_idx[:m] for c_idx in per_class])
        return idx, labels[idx]
