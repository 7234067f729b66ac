"""Class-balanced adaptive picking (GP-MAML step 3) on hand-built confidences."""

from __future__ import annotations

import torch

from cfs.meta.picking import class_balanced_pick


def scores_for(labels: list[int], confidences: list[float], n_way: int) -> torch.Tensor:
    """Scores whose argmax is ``labels`` and whose order of max-softmax is ``confidences``'."""
    s = torch.zeros(len(labels), n_way)
    s[torch.arange(len(labels)), torch.tensor(labels)] = torch.tensor(confidences)
    return s


def test_picks_the_m_most_confident_of_every_class():
    # class 0: queries 0 (.9), 2 (.5), 4 (.8); class 1: queries 1 (.7), 3 (.6); class 2: none yet
    labels = [0, 1, 0, 1, 0, 2, 2]
    conf = [9.0, 7.0, 5.0, 6.0, 8.0, 4.0, 3.0]
    idx, pseudo = class_balanced_pick(scores_for(labels, conf, 3), 3)
    # m = min(3, 2, 2) = 2: class 0 -> 0, 4; class 1 -> 1, 3; class 2 -> 5, 6
    assert idx.tolist() == [0, 4, 1, 3, 5, 6]
    assert pseudo.tolist() == [0, 0, 1, 1, 2, 2]


def test_top_p_cut_happens_before_balancing():
    labels = [0, 1, 0, 1, 0, 2, 2]
    conf = [9.0, 7.0, 5.0, 6.0, 8.0, 4.0, 3.0]
    # top 6 by confidence drops query 6: class 2 keeps only 5, so m = 1
    idx, pseudo = class_balanced_pick(scores_for(labels, conf, 3), 3, top_p=6)
    assert idx.tolist() == [0, 1, 5] and pseudo.tolist() == [0, 1, 2]
    # top 5 drops queries 5 and 6: class 2 is empty, nothing is picked
    idx, pseudo = class_balanced_pick(scores_for(labels, conf, 3), 3, top_p=5)
    assert idx.numel() == 0 and pseudo.numel() == 0


def test_confidence_is_softmax_max_not_raw_score():
    # same argmax score, but the second row's runner-up is close: lower softmax confidence
    s = torch.tensor([[5.0, 0.0], [5.0, 4.9], [0.0, 5.0], [4.0, 3.0]])
    idx, pseudo = class_balanced_pick(s, 2)
    assert idx.tolist() == [0, 2] and pseudo.tolist() == [0, 1]
    idx, _ = class_balanced_pick(s, 2, top_p=None)
    assert idx.tolist()[0] == 0  # query 0 (p=.993) before query 3 (p=.73) before query 1 (p=.52)
