"""``--eval-seen-only``: a quick run evaluates only what it has trained; the numbers it does
measure equal a full evaluation's, the rest are NaN (written as blanks by reports)."""

from __future__ import annotations

import math

import numpy as np

from cfs import testing


def test_seen_only_measures_the_lower_triangle_exactly():
    full = testing.run("replay", epochs=2)
    quick = testing.run("replay", epochs=2, eval_seen_only=True)
    R, Q = testing.accuracy_matrix(full), testing.accuracy_matrix(quick)
    lower = np.tril(np.ones_like(R, dtype=bool))
    assert np.array_equal(R[lower], Q[lower])
    assert np.isnan(Q[~lower]).all() and not np.isnan(R).any()
    assert all(math.isnan(v) for v in quick.state.results.initial)  # nothing trained: nothing evaluated
    assert testing.final_accuracy(quick) == testing.final_accuracy(full)
