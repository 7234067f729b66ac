"""One-pass CPU kernel for a diagonal quadratic penalty and its gradient (numba, optional).

A penalty ``sum_k (c_k (theta_k - theta*_k))^2`` (EWC's, with ``c = sqrt(scale F)``) with its
gradient ``2 c^2 (theta - theta*)`` added to ``.grad`` is memory-bound on a small model: torch's
ops each read and write whole weight-sized buffers (copy, subtract, multiply, dot, multiply-add:
about 13 buffer passes), and on CPU those passes push the weights and gradients out of cache.
This kernel reads ``theta``, ``c``, ``theta*`` and ``.grad`` once and writes ``.grad`` once, in
one loop per tensor; on the split-digits MLP it takes EWC's step from about 1.4 to about 1.25
times a fine-tuning step (``benchmarks/perf/scaling.py``, README's speed table).

The gradient is the same float operations as the torch path, in the same order (``e = (theta -
theta*) c``, then ``grad + (c + c) e`` as one fused multiply-add, as torch's vectorised
``addcmul`` does; doubling is exact), so on this machine it is bit-identical
(``tests/engine/test_fused_quadratic.py`` checks it); only the value's summation order differs
(vectorised partial sums per tensor, added in float64).

It runs only where it can be exact and worthwhile: numba installed (the extra ``fast``), every
tensor on the CPU, of the buffers' dtype (float32 or float64) and contiguous. Anything else
(CUDA, fp16 loss scaling, channels-last weights, no numba) returns ``None`` and the caller
takes torch's multi-tensor path. numba is imported, and the kernel compiled (cached on disk),
at the first call, never at start-up.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch

#: set to False to force torch's path (tests compare the two)
enabled = True


@functools.cache
def _kernel() -> Callable[..., float] | None:
    """The compiled kernel, or ``None`` when numba is not installed.

    It takes the tensors' addresses (``data_ptr``) rather than a tuple of arrays: numba unrolls
    a tuple of ``K`` arrays into ``K`` copies of the loop (25 s of compilation for a model of
    120 tensors), while an address table compiles once, in about a second, for any model, and
    passes in one small array (a few microseconds a step instead of tens)."""
    try:
        import numba
        from numba.core import cgutils, types
        from numba.extending import intrinsic
    except ImportError:
        return None

    @intrinsic
    def void_pointer(typingctx: Any, address: Any) -> Any:
        """An integer address as a ``void*`` (for ``numba.carray``)."""
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], cgutils.voidptr_t)
        return types.voidptr(address), codegen

    # reassoc/nsz let LLVM vectorise the sum of squares; contract fuses grad + (c + c) e into one
    # multiply-add, as torch's vectorised addcmul does, so the gradient matches torch's bit for bit
    @numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
    def quadratic_step(table: Any, roots: Any, anchors: Any) -> float:
        total, start = 0.0, 0
        for k in range(table.shape[0]):
            n = table[k, 2]
            t = numba.carray(void_pointer(table[k, 0]), n, roots.dtype)
            g = numba.carray(void_pointer(table[k, 1]), n, roots.dtype)
            c, a = roots[start:start + n], anchors[start:start + n]
            acc = np.zeros(1, roots.dtype)[0]
            for i in range(n):
                e = (t[i] - a[i]) * c[i]
                acc += e * e
                g[i] += (c[i] + c[i]) * e
            total += acc
            start += n
        return total

    return quadratic_step


class QuadraticKernel:
    """The kernel bound to fixed ``c`` and ``theta*`` (flat buffers, as
    :class:`cfs_plugins.ewc.QuadraticPenalty` keeps them; segment ``k`` has ``sizes[k]``
    elements). The kernel reads and writes through the tensors' addresses, so every call checks
    every weight and gradient (CPU, dtype, size, contiguous): a few microseconds."""

    def __init__(self, kernel: Callable[..., float], roots: torch.Tensor, anchors: torch.Tensor,
                 sizes: list[int]) -> None:
        self.kernel, self.dtype = kernel, roots.dtype
        self.roots, self.anchors = roots.numpy(), anchors.numpy()  # views: they share memory
        self.sizes = sizes

    @classmethod
    def prepare(cls, roots: torch.Tensor, anchors: torch.Tensor, sizes: list[int]) -> "QuadraticKernel | None":
        """The kernel for these flat buffers, or ``None`` where it does not apply (numba
        missing, disabled, a buffer not a contiguous 1-d float32/float64 CPU tensor)."""
        if not enabled or not sizes or roots.dtype not in (torch.float32, torch.float64):
            return None
        if anchors.dtype != roots.dtype or any(
                not t.is_cpu or t.dim() != 1 or not t.is_contiguous() or t.numel() != sum(sizes) for t in (roots, anchors)):
            return None
        kernel = _kernel()
        return None if kernel is None else cls(kernel, roots, anchors, sizes)

    def _fits(self, tensors: list[torch.Tensor]) -> bool:
        """Every tensor a contiguous CPU tensor of the buffers' dtype and its segment's size."""
        return len(tensors) == len(self.sizes) and all(
            t.is_cpu and t.dtype == self.dtype and t.numel() == n and t.is_contiguous()
            for t, n in zip(tensors, self.sizes))

    def __call__(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor | None:
        """Add ``2 c^2 (theta - theta*)`` to every ``grads[k]`` and return ``sum_k ||c_k (theta_k
        - theta*_k)||^2`` as a scalar tensor, in one pass; ``None`` (nothing done) where the kernel
        does not apply to these tensors (see the module's docstring): the caller takes torch's path."""
        if not enabled or not self._fits(params) or not self._fits(grads) or any(g.requires_grad for g in grads):
            return None
        table = np.array([(p.data_ptr(), g.data_ptr(), n) for p, g, n in zip(params, grads, self.sizes)], dtype=np.int64)
        return torch.scalar_tensor(self.kernel(table, self.roots, self.anchors), dtype=self.dtype)
