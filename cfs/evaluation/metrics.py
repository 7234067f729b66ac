"""Continual-learning metrics from the accuracy matrix, defined once.

``R[i, j]`` is the accuracy (0..1) on the test data of experience ``j`` after training
experience ``i``; ``b[j]`` is the accuracy on experience ``j`` before any training; ``n[j]``
is the number of test samples of experience ``j``. Definitions follow Lopez-Paz & Ranzato
(GEM, 2017) for BWT/FWT, Chaudhry et al. (2018) for forgetting and Rebuffi et al. (iCaRL) for
average incremental accuracy.
"""

from __future__ import annotations

import numpy as np


def seen_accuracy(R: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``A[i]``: accuracy on all test samples of experiences ``0..i`` after training ``i``
    (sample-weighted, i.e. the usual "accuracy on all seen classes")."""
    R, n = np.asarray(R, float), np.asarray(n, float)
    return np.array([(R[i, : i + 1] * n[: i + 1]).sum() / n[: i + 1].sum() for i in range(R.shape[0])])


def average_accuracy(R: np.ndarray) -> float:
    """Mean over experiences of the final accuracy, ``mean_j R[T-1, j]`` (GEM's ACC)."""
    return float(np.mean(np.asarray(R, float)[-1]))


def last_accuracy(R: np.ndarray, n: np.ndarray) -> float:
    """Accuracy on all test samples after the last experience."""
    return float(seen_accuracy(R, n)[-1])


def average_incremental_accuracy(R: np.ndarray, n: np.ndarray) -> float:
    """Mean of ``A[i]`` over all steps, the first included (iCaRL / PyCIL)."""
    return float(np.mean(seen_accuracy(R, n)))


def forgetting_per_experience(R: np.ndarray) -> np.ndarray:
    """``f[j] = max_{l<T-1} R[l, j] - R[T-1, j]`` for ``j < T-1`` (only steps after ``j`` learnt it)."""
    R = np.asarray(R, float)
    T = R.shape[0]
    return np.array([R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)])


def forgetting(R: np.ndarray) -> float:
    """Average forgetting over all but the last experience (0 for a single experience)."""
    f = forgetting_per_experience(R)
    return float(f.mean()) if f.size else 0.0


def backward_transfer(R: np.ndarray) -> float:
    """``BWT = mean_{j<T-1} (R[T-1, j] - R[j, j])``; negative means forgetting."""
    R = np.asarray(R, float)
    T = R.shape[0]
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)])) if T > 1 else 0.0


def forward_transfer(R: np.ndarray, b: np.ndarray) -> float:
    """``FWT = mean_{j>0} (R[j-1, j] - b[j])``: how much earlier steps help a step not yet seen."""
    R, b = np.asarray(R, float), np.asarray(b, float)
    T = R.shape[0]
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)])) if T > 1 else 0.0


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy of each class (NaN for a class with no test sample)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        mask = y_true == c
        if mask.any():
            out[c] = float((y_pred[mask] == c).mean())
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[t, p]`` of test samples of true class ``t`` predicted as ``p`` (Avalanche's
    ``ConfusionMatrix`` layout). A prediction outside ``0..n_classes-1`` (nothing learnt yet)
    is counted nowhere."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    ok = (y_pred >= 0) & (y_pred < n_classes) & (y_true >= 0) & (y_true < n_classes)
    flat = np.bincount(y_true[ok] * n_classes + y_pred[ok], minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def summary(R: np.ndarray, b: np.ndarray, n: np.ndarray) -> dict[str, float]:
    """All scalar metrics of one run, as fractions in 0..1."""
    return {
        "average_accuracy": average_accuracy(R),
        "last_accuracy": last_accuracy(R, n),
        "average_incremental_accuracy": average_incremental_accuracy(R, n),
        "forgetting": forgetting(R),
        "backward_transfer": backward_transfer(R),
        "forward_transfer": forward_transfer(R, b),
    }
