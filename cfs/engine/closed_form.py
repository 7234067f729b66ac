"""Loss terms whose gradient is known in closed form.

A quadratic penalty such as EWC's ``sum_k F_k (theta_k - theta*_k)^2`` has the gradient
``2 F (theta - theta*)``, computed anyway on the way to its value. Sending it through autograd
costs a custom ``Function`` call, graph nodes and a second accumulation into every
parameter's ``.grad``: on a small model that is half a training step. A ``cfs_loss`` hook may
instead return a :class:`ClosedFormLoss`: the shared step (:mod:`cfs.engine.step`) adds its
value to the logged loss (so the loss log and the non-finite check see it) and, right after
``backward`` and before gradients are averaged over ranks or any ``cfs_after_backward`` hook
sees them, adds its gradient to the parameters' ``.grad``. Every composed strategy therefore
sees the gradient of the whole loss, exactly as if autograd had computed it.

A term may also be *deferred* (:meth:`ClosedFormLoss.deferred`): the hook hands over a function
that computes value and gradient, and the step calls it right after ``backward``. On a small
model the penalty is memory-bound (it reads two weight-sized buffers every step); computed
next to the gradient it is added to, the buffers it writes are still in cache when they are
read again, and nothing it touches pushes the weights out of cache between forward and
backward. An *accumulating* term (:meth:`ClosedFormLoss.accumulating`) goes one step further:
it adds its gradient to ``.grad`` itself, so a fused kernel (EWC's,
:mod:`cfs.engine.fused_quadratic`) computes value and gradient in one pass over the weights.
"""

from __future__ import annotations

from typing import Callable

import torch


class ClosedFormLoss:
    """``value`` (a scalar tensor, no graph) and its gradient with respect to ``params[k]`` (or
    to its first ``rows[k]`` rows, for a head grown since the term was set up; ``None``: the
    whole tensor): ``alpha * grads[k]``, or ``alpha * grads[k] * factors[k]`` when ``factors`` is
    given (added with one fused multiply-add, without forming the product)."""

    __slots__ = ("_value", "params", "grads", "factors", "alpha", "rows", "_compute", "_accumulate")

    def __init__(self, value: torch.Tensor, params: list[torch.Tensor], grads: list[torch.Tensor],
                 rows: list[int | None] | None = None, factors: list[torch.Tensor] | None = None,
                 alpha: float = 1.0) -> None:
        if len(params) != len(grads) or (factors is not None and len(factors) != len(grads)):
            raise ValueError(f"ClosedFormLoss: {len(params)} parameters, {len(grads)} gradients"
                             + ("" if factors is None else f", {len(factors)} factors"))
        self._setup(params, rows, factors, alpha)
        self._value: torch.Tensor | None = value.detach()
        self._compute: Callable[[], tuple[torch.Tensor, list[torch.Tensor]]] | None = None
        self._accumulate: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor] | None = None
        self.grads = grads

    def _setup(self, params: list[torch.Tensor], rows: list[int | None] | None,
               factors: list[torch.Tensor] | None, alpha: float) -> None:
        self.params, self.factors, self.alpha = params, factors, float(alpha)
        self.rows = rows if rows is not None else [None] * len(params)

    @classmethod
    def deferred(cls, compute: Callable[[], tuple[torch.Tensor, list[torch.Tensor]]], params: list[torch.Tensor],
                 rows: list[int | None] | None = None, factors: list[torch.Tensor] | None = None,
                 alpha: float = 1.0) -> "ClosedFormLoss":
        """A term whose ``(value, grads)`` come from ``compute()``, called once, when the value or
        the gradient is first needed: the shared step calls it right after ``backward`` (before,
        under ``on_nan: skip-batch``, which must see the whole loss before the update).
        ``compute`` must not depend on anything the backward pass changes (the weights do not
        change until the optimizer steps)."""
        term = cls.__new__(cls)
        term._setup(params, rows, factors, alpha)
        term._value, term._compute, term._accumulate, term.grads = None, compute, None, []
        return term

    @classmethod
    def accumulating(cls, accumulate: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor],
                     value: Callable[[], torch.Tensor], params: list[torch.Tensor],
                     rows: list[int | None] | None = None) -> "ClosedFormLoss":
        """A deferred term that adds its gradient itself, so that value and gradient can come
        from one pass (a fused kernel): each :meth:`add_gradient` calls ``accumulate(targets,
        scale)``, which adds ``scale *`` the gradient (``scale``: ``None`` for 1) to ``targets``
        (the parameters' ``.grad``, or their first ``rows``) and returns the value. ``value()``
        computes the value alone, for a caller that needs it before the gradients exist (the
        shared step under ``on_nan: skip-batch``); it must agree with ``accumulate``'s."""
        term = cls.__new__(cls)
        term._setup(params, rows, None, 1.0)
        term._value, term.grads = None, []
        term._compute = lambda: (value(), [])
        term._accumulate = accumulate
        return term

    @property
    def value(self) -> torch.Tensor:
        """The term's value (a scalar tensor without graph), computed now for a deferred term."""
        if self._value is None:
            self._evaluate()
        return self._value  # type: ignore[return-value]

    def _evaluate(self) -> None:
        value, grads = self._compute()  # type: ignore[misc]
        if self._accumulate is not None:  # the gradient waits for add_gradient
            self._value = value.detach()
            return
        if len(grads) != len(self.params):
            raise ValueError(f"ClosedFormLoss: {len(self.params)} parameters, {len(grads)} gradients")
        self._value, self.grads, self._compute = value.detach(), grads, None

    def item(self) -> float:
        return self.value.item()

    def add_gradient(self, scale: torch.Tensor | None = None) -> None:
        """Add ``scale *`` the gradient to the parameters' ``.grad`` (``scale``: the loss scale of
        fp16 training, a tensor on the device so nothing is read back; ``None``: 1)."""
        targets = []
        for p, r in zip(self.params, self.rows):
            if p.grad is None:  # a parameter the rest of the loss does not reach
                p.grad = torch.zeros_like(p)
            targets.append(p.grad if r is None else p.grad[:r])
        if self._accumulate is not None:
            value = self._accumulate(targets, scale)
            if self._value is None:
                self._value = value.detach()
            return
        if self._value is None:  # a deferred term: value and gradient computed now
            self._evaluate()
        grads = self.grads if scale is None else torch._foreach_mul(self.grads, scale)
        if self.factors is None:
            torch._foreach_add_(targets, grads, alpha=self.alpha)
        else:
            torch._foreach_addcmul_(targets, grads, self.factors, value=self.alpha)
