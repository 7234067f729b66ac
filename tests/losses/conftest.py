"""Helpers for the loss tests: the teacher side must never receive a gradient."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def no_teacher_grad():
    """``check(fn, student, teacher)``: backprop ``fn(student, teacher)``; the student gets a
    non-zero gradient, the teacher (a leaf that requires grad) gets none."""

    def check(fn, student: torch.Tensor, teacher: torch.Tensor) -> None:
        s = student.clone().requires_grad_(True)
        t = teacher.clone().requires_grad_(True)
        fn(s, t).backward()
        assert t.grad is None, "the teacher received a gradient"
        assert s.grad is not None and s.grad.abs().sum() > 0, "the student received no gradient"

    return check
