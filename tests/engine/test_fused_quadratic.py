"""The one-pass CPU kernel of the diagonal quadratic penalty (:mod:`cfs.engine.fused_quadratic`)
adds the same gradient as torch's multi-tensor path, bit for bit, and the same value up to
summation order; where it cannot be exact (a channels-last weight, bf16, CUDA) it steps aside and
torch's path runs; an EWC run trains to the same weights either way."""

from __future__ import annotations

import pytest
import torch

from cfs import testing
from cfs.engine import fused_quadratic
from cfs_plugins.ewc import QuadraticPenalty

pytest.importorskip("numba")


def _problem(dtype: torch.dtype = torch.float32, seed: int = 0):
    """Parameters (one a head grown by 2 rows since its Fisher, one 0-d), Fisher and anchors."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(5, 3, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, generator=g),
              torch.randn((), generator=g)]
    fisher = [torch.rand(5, 3, generator=g), torch.rand(4, 4, generator=g), torch.rand(4, generator=g),
              torch.rand((), generator=g)]
    anchor = [torch.randn(f.shape, generator=g) for f in fisher]
    return [p.to(dtype) for p in params], fisher, anchor


def _penalise(params, fisher, anchor, kernel: bool, monkeypatch, scale: float = 7.0):
    """Value and gradients of the penalty at copies of ``params`` (the first parameter's
    gradient preset, as backward leaves it; the others ``None``)."""
    with monkeypatch.context() as patch:
        patch.setattr(fused_quadratic, "enabled", kernel)
        if kernel:  # the kernel must really run: torch's path is not there to fall back on
            patch.setattr(QuadraticPenalty, "evaluate", None)
        ps = [p.clone().requires_grad_() for p in params]
        ps[0].grad = torch.full_like(ps[0], 0.25)
        term = QuadraticPenalty(ps, fisher, anchor, scale)(ps)
        term.add_gradient()
        return term.value, [p.grad for p in ps]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_adds_the_torch_gradient_bit_for_bit(monkeypatch, dtype):
    problem = _problem(dtype)
    fast_value, fast = _penalise(*problem, kernel=True, monkeypatch=monkeypatch)
    slow_value, slow = _penalise(*problem, kernel=False, monkeypatch=monkeypatch)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
    assert fast_value.dtype == dtype
    assert fast_value.item() == pytest.approx(slow_value.item(), rel=1e-6)
    assert fast[1][4:].abs().sum() == 0  # rows added after the Fisher are not penalised


def test_kernel_value_and_gradient_by_hand(monkeypatch):
    """One weight: F = 4 (scale 1), theta = 3, theta* = 1: value 4 * 2^2 = 16, gradient 2 * 4 * 2 = 16."""
    monkeypatch.setattr(fused_quadratic, "enabled", True)
    p = torch.tensor([3.0], requires_grad=True)
    term = QuadraticPenalty([p], [torch.tensor([4.0])], [torch.tensor([1.0])])([p])
    term.add_gradient()
    assert term.value.item() == 16.0 and p.grad.tolist() == [16.0]


def test_kernel_runs_on_plain_cpu_tensors_and_steps_aside_otherwise():
    p, g = torch.randn(4, 3), torch.zeros(4, 3)
    c, a = torch.rand(12), torch.randn(12)
    kernel = fused_quadratic.QuadraticKernel.prepare(c, a, [12])
    assert kernel([p], [g]) is not None
    assert g.abs().sum() > 0
    conv = torch.randn(2, 3, 2, 2).to(memory_format=torch.channels_last)  # not contiguous
    assert fused_quadratic.QuadraticKernel.prepare(torch.rand(24), torch.randn(24), [24])(
        [conv], [torch.zeros(2, 3, 2, 2)]) is None
    assert kernel([p.to(torch.bfloat16)], [g]) is None
    assert kernel([p], [torch.zeros(3, 4).t()]) is None  # a transposed gradient
    assert kernel([p], [torch.zeros(4, 3, dtype=torch.float64)]) is None  # writes go through addresses:
    assert kernel([p], [torch.zeros(3, 3)]) is None  # a gradient of another dtype or size is refused
    assert kernel([p, p], [g, g]) is None
    assert fused_quadratic.QuadraticKernel.prepare(c.bfloat16(), a.bfloat16(), [12]) is None
    assert fused_quadratic.QuadraticKernel.prepare(c, a, [11]) is None


def test_kernel_follows_a_weight_whose_storage_changed():
    """Replacing a weight's data must not leave the kernel reading the old storage, nor skip the
    checks."""
    kernel = fused_quadratic.QuadraticKernel.prepare(torch.ones(3), torch.zeros(3), [3])
    p = torch.nn.Parameter(torch.ones(3))
    assert kernel([p], [torch.zeros(3)]).item() == 3.0
    p.data = torch.full((3,), 2.0)
    g = torch.zeros(3)
    assert kernel([p], [g]).item() == 12.0 and g.tolist() == [4.0, 4.0, 4.0]
    p.data = torch.ones(4)
    assert kernel([p], [torch.zeros(4)]) is None
    p.data = torch.ones(3, 3)[:, 0]  # three elements, not contiguous
    assert kernel([p], [torch.zeros(3)]) is None


def test_kernel_compiles_once_for_any_number_of_tensors(monkeypatch):
    """A model of 150 tensors: the value and every gradient match torch's path."""
    g = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (5,), (3, 2, 2)] * 50
    params = [torch.randn(s, generator=g) for s in shapes]
    fisher = [torch.rand(s, generator=g) for s in shapes]
    anchor = [torch.randn(s, generator=g) for s in shapes]
    fast_value, fast = _penalise(params, fisher, anchor, kernel=True, monkeypatch=monkeypatch)
    slow_value, slow = _penalise(params, fisher, anchor, kernel=False, monkeypatch=monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    assert fast_value.item() == pytest.approx(slow_value.item(), rel=1e-6)


def test_a_channels_last_weight_takes_torch_path_with_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 3, 2, 2, generator=g)
    fisher, anchor = [torch.rand(2, 3, 2, 2, generator=g)], [torch.randn(2, 3, 2, 2, generator=g)]
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        p = w.clone().to(memory_format=layout).requires_grad_()
        term = QuadraticPenalty([p], fisher, anchor)([p])
        term.add_gradient()
        results.append((term.value, p.grad))
    assert results[0][0].item() == pytest.approx(results[1][0].item(), rel=1e-6)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-6, atol=0)


def test_an_ewc_run_trains_to_the_same_weights_with_and_without_the_kernel(monkeypatch):
    weights = []
    for kernel in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr(fused_quadratic, "enabled", kernel)
            if kernel:  # the kernel must really run
                patch.setattr(QuadraticPenalty, "evaluate", None)
            result = testing.run("ewc", epochs=1)
        weights.append(result.state.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_without_numba_ewc_takes_torch_path_and_trains():
    """An install without the extra ``fast``: numba cannot be imported, EWC still runs (in a
    fresh interpreter, so this process's compiled kernel does not count)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from cfs import testing\n"
        "from cfs_plugins.ewc import QuadraticPenalty\n"
        "made, init = [], QuadraticPenalty.__init__\n"
        "def record(self, *a, **k):\n"
        "    init(self, *a, **k); made.append(self.kernel)\n"
        "QuadraticPenalty.__init__ = record\n"
        "result = testing.run('ewc', epochs=1)\n"
        "assert made and all(k is None for k in made), made\n"
        "assert result.state.strategy('ewc').fisher\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
