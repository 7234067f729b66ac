"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017; METHODS.md 11.2), and its
online variant (EWC-on, Schwarz et al. 2018; mammoth).

After each experience the diagonal empirical Fisher ``F`` (mean over the experience's
training batches of the squared CE gradients, clamped from above at ``fisher_max`` as PyCIL
does) and the weights ``theta*`` are stored; later experiences add
``(lam / 2) sum_k F_k (theta_k - theta*_k)^2``.

* default (PyCIL): ``F <- a F_old + (1 - a) F_new`` with ``a`` = old classes / all classes,
  ``lam = 1000``, and the CE uses only the new-class logits (``new_class_ce``);
* ``online=True`` (EWC-on): unclamped ``F <- gamma F_old + F_new``, penalty ``lam * sum F (theta -
  theta*)^2`` (no 1/2, as mammoth), ``lam = 10``, ``gamma = 1``.

``new_class_ce`` applies to both variants (mammoth's EWC-on uses the CE over all classes,
``-o ewc.new_class_ce=false``; it then forgets as much as fine-tuning in class-incremental
learning, as mammoth's own tables show for seq-CIFAR-10).
Head rows added after a Fisher was taken have no Fisher entry and are not penalised.
The online variant takes mammoth's per-example Fisher (squared per-example gradients weighted
by the probability of the label, averaged); the default PyCIL's squared batch gradients.
Online EWC runs in train mode, so batch-norm statistics see one example at a time there.

The penalty is one fused computation over all parameters (:class:`QuadraticPenalty`: on
``sqrt`` of the weighted Fisher, formed when the parameters change), not a Python loop of
per-parameter ops, and its gradient (twice the weighted Fisher times ``theta - theta*``),
found on the way to the value, is added to ``.grad`` right after ``backward`` (a deferred
:class:`~cfs.engine.closed_form.ClosedFormLoss`) instead of going through an autograd graph:
on CPU with numba one pass over the weights, else a few multi-tensor passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.engine.closed_form import ClosedFormLoss
from cfs.engine.fused_quadratic import QuadraticKernel
from cfs.engine.state import RunState
from cfs.registry import Registry
from cfs.strategy import Strategy
from cfs.teacher import NEW_CLASS_CE, new_class_base_loss


@dataclass
class EWCOptions:
    lam: float | None = None
    online: bool = False
    gamma: float = 1.0
    fisher_max: float = 1e-4
    new_class_ce: bool = True


def _pad_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad a stored tensor along dim 0 to a grown parameter's shape."""
    if t.shape == shape:
        return t
    out = torch.zeros(shape, dtype=t.dtype, device=t.device)
    out[: t.shape[0]] = t
    return out


class QuadraticPenalty:
    """``scale * sum_k F_k (theta_k - theta*_k)^2`` for fixed ``fisher`` (>= 0) and ``anchor``
    lists; a parameter with more rows than its Fisher (a head grown since) is penalised on its
    first rows only.

    With ``c = sqrt(scale F)`` formed once here and ``e = c (theta - theta*)``, the value is
    ``||e||^2`` and the gradient ``2 c e``. A call returns a deferred
    :class:`~cfs.engine.closed_form.ClosedFormLoss` that the shared step computes right after
    ``backward``, adding the gradient to ``.grad`` itself, with no autograd graph for the penalty.
    On CPU with numba installed that is one pass reading the weights, ``c``, the anchor and the
    gradient once (:mod:`cfs.engine.fused_quadratic`); elsewhere ``c``, the anchor and ``e`` each
    live in one flat buffer (with per-parameter views), and a call is one multi-tensor copy of
    the weights into ``e``, flat ``sub``/``mul``/``dot`` (one dispatch each, whatever the number
    of parameters) and one multi-tensor multiply-add into ``.grad``.

    Why this shape: on a small model the penalty is memory-bound and each op's dispatch costs
    more than its arithmetic. Computed after ``backward``, the penalty's buffers do not push
    the weights out of cache between forward and backward, and the gradient is added while the
    buffers are in cache; the flat buffers replace a norm per parameter and a stack by one dot.
    ``e`` is reused: a term's gradient is valid until the next call."""

    def __init__(self, params: list[torch.Tensor], fisher: list[torch.Tensor], anchor: list[torch.Tensor],
                 scale: float = 1.0) -> None:
        self.rows = [None if p.shape == f.shape else f.shape[0] for p, f in zip(params, fisher)]
        device = params[0].device if params else torch.device("cpu")
        dtype = torch.float32
        for q in params:
            dtype = torch.promote_types(dtype, q.dtype)
        shapes = [f.shape for f in fisher]
        self.root_flat = torch.cat([(scale * f.to(device, dtype)).sqrt().reshape(-1) for f in fisher]) \
            if fisher else torch.zeros(0, dtype=dtype, device=device)
        self.anchor_flat = torch.cat([a.to(device, dtype).reshape(-1) for a in anchor]) \
            if anchor else torch.zeros(0, dtype=dtype, device=device)
        self.e_flat = torch.empty_like(self.root_flat)
        self.root, self.anchor = _views(self.root_flat, shapes), _views(self.anchor_flat, shapes)
        self.e = _views(self.e_flat, shapes)
        # None: numba missing, or not on CPU
        self.kernel = QuadraticKernel.prepare(self.root_flat, self.anchor_flat, [math.prod(s) for s in shapes])

    def __call__(self, params: list[torch.Tensor]) -> ClosedFormLoss:
        """The penalty at ``params`` as a deferred term: the shared step computes it right after
        ``backward`` (the weights are those of the forward pass until the optimizer steps), value
        and gradient together (:meth:`accumulate`)."""
        return ClosedFormLoss.accumulating(lambda targets, scale: self.accumulate(params, targets, scale),
                                           lambda: self.evaluate(params)[0], params, self.rows)

    def accumulate(self, params: list[torch.Tensor], targets: list[torch.Tensor],
                   scale: torch.Tensor | None = None) -> torch.Tensor:
        """Add ``scale *`` the gradient ``2 c e`` to ``targets`` (the parameters' ``.grad``, or
        their penalised rows) and return the value: in one pass on CPU where numba is installed
        (:mod:`cfs.engine.fused_quadratic`, bit-identical gradient), else with torch's
        multi-tensor ops (:meth:`evaluate`, then one fused multiply-add)."""
        if scale is None and self.kernel is not None:
            value = self.kernel(self._penalised(params), targets)
            if value is not None:
                return value
        value, e = self.evaluate(params)
        torch._foreach_addcmul_(targets, e if scale is None else torch._foreach_mul(e, scale), self.root, value=2.0)
        return value

    def _penalised(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each parameter, or its first rows where the head has grown since the Fisher."""
        return [p if r is None else p[:r] for p, r in zip(params, self.rows)]

    def evaluate(self, params: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(value, e)`` with ``e = sqrt(scale F) (theta - theta*)`` (views of one buffer) and
        the value ``||e||^2``."""
        with torch.no_grad():
            if self.e:
                torch._foreach_copy_(self.e, self._penalised(params))
            self.e_flat.sub_(self.anchor_flat).mul_(self.root_flat)
            return torch.dot(self.e_flat, self.e_flat), self.e


def _views(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Consecutive views of ``flat`` with the given shapes."""
    sizes = [math.prod(s) for s in shapes]
    return [v.view(s) for v, s in zip(flat.split(sizes), shapes)]


def quadratic_penalty(params: list[torch.Tensor], fisher: list[torch.Tensor],
                      anchor: list[torch.Tensor], scale: float = 1.0) -> ClosedFormLoss:
    """``scale * sum_k F_k (theta_k - theta*_k)^2`` in one go (see :class:`QuadraticPenalty`)."""
    return QuadraticPenalty(params, fisher, anchor, scale)(params)


def empirical_fisher(state: RunState, batch_size: int, per_example: bool = False) -> dict[str, torch.Tensor]:
    """Mean over batches of squared gradients of CE over the seen classes (PyCIL's Fisher);
    ``per_example`` (mammoth's EWC-on): mean over examples of the squared gradient of each
    example's log-likelihood, weighted by the probability the model gives its label."""
    model = state.model
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    data = state.experience.train.to(state.device)
    was_training = model.training
    model.train()
    n_batches = 0
    step = 1 if per_example else batch_size
    for start in range(0, len(data), step):
        x = state.prepare(data.x[start : start + step])
        y = data.y[start : start + step]
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x)[:, : state.n_seen], y)
        loss.backward()
        weight = float(torch.exp(-loss.detach())) if per_example else 1.0
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += weight * p.grad.detach().pow(2)
        n_batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / max(n_batches, 1) for n, f in fisher.items()}


class EWC(Strategy):
    """Elastic Weight Consolidation: a diagonal-Fisher quadratic penalty (online variant too)."""

    name = "ewc"
    compatibility = frozenset({"class-incremental"})
    Options = EWCOptions
    shared_answers = {"cfs_base_loss": NEW_CLASS_CE}
    fallback_hooks = frozenset({"cfs_base_loss"})  # as the teacher family's (cfs.teacher)

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.n_old = 0
        self._penalised: tuple | None = None  # (params, QuadraticPenalty) of this epoch

    @property
    def lam(self) -> float:
        if self.options.lam is not None:
            return float(self.options.lam)
        return 10.0 if self.options.online else 1000.0

    def inactive_hooks(self) -> frozenset[str]:
        return frozenset() if self.options.new_class_ce else frozenset({"cfs_base_loss"})

    @hookimpl
    def cfs_base_loss(self, state: RunState) -> torch.Tensor | None:
        """The teacher family's new-class CE (option ``new_class_ce``), shared with it."""
        return new_class_base_loss(state, self.n_old) if self.fisher else None

    @hookimpl
    def cfs_loss(self, state: RunState) -> ClosedFormLoss | None:
        if not self.fisher:
            return None
        if self._penalised is None:
            named = self._named(state)
            params = [p for _, p in named]
            scale = self.lam if self.options.online else self.lam / 2
            self._penalised = (params, QuadraticPenalty(params, [self.fisher[n] for n, _ in named],
                                                        [self.anchor[n] for n, _ in named], scale))
        params, fused = self._penalised
        return fused(params)

    def _named(self, state: RunState) -> list[tuple[str, torch.Tensor]]:
        """The model's parameters that have a Fisher entry, with their names."""
        return [(n, p) for n, p in state.model.named_parameters() if n in self.fisher]

    @hookimpl
    def cfs_before_epoch(self, state: RunState) -> None:
        """Look the parameters up again once per epoch, not per step (a grown head holds new
        ones); the penalty's flat buffers are rebuilt only when they changed."""
        if self._penalised is not None:
            now, before = [p for _, p in self._named(state)], self._penalised[0]
            if len(now) != len(before) or any(a is not b or a.shape != b.shape for a, b in zip(now, before)):
                self._penalised = None

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        new = empirical_fisher(state, state.config.batch_size, per_example=self.options.online)
        if not self.options.online:  # PyCIL clamps; mammoth's EWC-on does not
            new = {n: f.clamp(max=self.options.fisher_max) for n, f in new.items()}
        if self.fisher:
            if self.options.online:
                new = {n: self.options.gamma * _pad_to(self.fisher[n], f.shape) + f if n in self.fisher else f
                       for n, f in new.items()}
            else:
                a = self.n_old / max(state.n_seen, 1)
                new = {n: a * _pad_to(self.fisher[n], f.shape) + (1 - a) * f if n in self.fisher else f
                       for n, f in new.items()}
        self.fisher = new
        self.anchor = {n: p.detach().clone() for n, p in state.model.named_parameters() if n in new}
        self.n_old = state.n_seen
        self._penalised = None

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": {n: f.cpu() for n, f in self.fisher.items()},
                "anchor": {n: a.cpu() for n, a in self.anchor.items()}, "n_old": self.n_old}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher, self.anchor, self.n_old = dict(state["fisher"]), dict(state["anchor"]), state["n_old"]
        self._penalised = None


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(EWC)
