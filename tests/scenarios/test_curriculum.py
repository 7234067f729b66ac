"""The Curriculum Designer's ordering (cfs.scenarios.curriculum) on hand-made distances, and
--class-order curriculum recorded in run.json."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from cfs.cli import main
from cfs.scenarios.curriculum import (cosine_distances, curriculum_score, design_order, normalise_rows,
                                      rank_among)

# class 0 is central (equally far from every other class: zero variance); class 3 is the
# class closest to 0; classes 1 and 2 are far from each other
D = np.array([[0.0, 0.5, 0.5, 0.5],
              [0.5, 0.0, 1.0, 0.6],
              [0.5, 1.0, 0.0, 0.6],
              [0.5, 0.6, 0.6, 0.0]])


def test_normalised_rows_sum_to_one():
    assert normalise_rows(D).sum(1) == pytest.approx([1, 1, 1, 1])
    assert normalise_rows(np.zeros((2, 2))).tolist() == [[0, 0], [0, 0]]


def test_score_by_hand():
    d = normalise_rows(D)  # row 0: 1/3 each; rows 1, 2: 0.5/2.1, 1/2.1, 0.6/2.1; row 3: 0.5/1.7, ...
    v = np.array([d[i, [j for j in range(4) if j != i]].var() for i in range(4)])
    assert v[0] == 0 and v[3] < v[1] == v[2]
    vh = v / v.max()
    off = d[~np.eye(4, dtype=bool)].max()
    t = [0, 1 / 3, 2 / 3, 1]
    order = [0, 3, 1, 2]
    expect = -sum((1 - t[k]) * vh[c] + t[k] * d[c, 0] / off for k, c in enumerate(order))
    assert curriculum_score(order, D) == pytest.approx(expect)


def test_designed_order_is_the_best_scored_and_starts_central():
    order = design_order(D)
    best = max(itertools.permutations(range(4)), key=lambda o: curriculum_score(list(o), D))
    assert curriculum_score(order, D) == pytest.approx(curriculum_score(list(best), D))
    assert order[0] == 0  # the central class first
    others = [list(o) for o in itertools.permutations(range(4)) if list(o) != order]
    assert rank_among(order, others, D) == 1


def test_last_class_is_the_one_most_similar_to_the_first():
    # every class equally central (a ring): only the similarity to the first class decides the end
    ring = np.array([[0, 1, 2, 1], [1, 0, 1, 2], [2, 1, 0, 1], [1, 2, 1, 0]], float)
    order = design_order(ring)
    assert ring[order[-1], order[0]] == 1  # a neighbour of the first class, not the opposite one


def test_cosine_distances_of_prototypes():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    d = cosine_distances(p)
    assert d[0, 1] == pytest.approx(1.0) and d[0, 2] == pytest.approx(1 - 2 ** -0.5)
    assert np.diag(d).tolist() == [0, 0, 0] and np.allclose(d, d.T)


def test_class_order_curriculum_recorded_in_run_json(tmp_path):
    out = tmp_path / "run"
    assert main(["bench", "--scenario", "online-split-digits", "--strategy", "finetune", "--class-order",
                 "curriculum", "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "run.json").read_text())
    source = info["scenario"]["class_order_from"]
    assert source["mode"] == "curriculum" and len(source["distances"]) == 10
    order = info["scenario"]["class_order"]
    assert order == design_order(np.array(source["distances"]))
    assert "class_order: curriculum" in (out / "config.yaml").read_text()
