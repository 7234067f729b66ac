"""The one optimisation step both loops share.

The continual loop (one batch of an experience) and the episodic loop (one meta-batch) differ
in how they get the base loss: cross-entropy of the model's logits, or a strategy's
``cfs_meta_loss``. Everything after that is the same and lives here once: the optimizer and
LR schedule built with every ``cfs_extra_parameters``, autocast and the GradScaler, the extra
``cfs_loss`` terms every composed strategy adds (autograd terms, and
:class:`~cfs.engine.closed_form.ClosedFormLoss` terms whose gradient is added right after
``backward``), ``cfs_before_backward``/``cfs_after_backward``, and the optimizer step.

No step waits for the device: the non-finite-loss check of ``on_nan: stop`` is deferred (the
losses of the last steps are checked together, at the end of every epoch, at every episodic
log point and every ``CHECK_EVERY`` steps, in one transfer), so a CUDA step queues its work and
returns. ``on_nan: skip-batch`` must decide before the update and reads the loss every step.
In a distributed run (:mod:`cfs.engine.distributed`) the gradients are averaged over ranks
right after ``backward``, before ``cfs_after_backward``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from cfs.engine import distributed
from cfs.engine.closed_form import ClosedFormLoss
from cfs.engine.devices import amp_dtype, autocast
from cfs.engine.epoch_log import stack_scalars
from cfs.engine.optim import build_optimizer, build_scheduler
from cfs.engine.state import RunState
from cfs.errors import CfsError


class NonFiniteError(CfsError):
    """The run diverged: a loss or the weights became NaN or infinite."""


#: steps whose losses may wait before the deferred non-finite check reads them
CHECK_EVERY = 64


def position(state: RunState) -> tuple[int, int, int, int]:
    """Where a run is, as plain ints (cheap to keep per step): experience, epoch, batch in the
    epoch, iteration."""
    return state.experience_index, state.epoch, state.step_in_epoch, state.iteration


def where(state: RunState, at: tuple[int, int, int, int] | None = None) -> str:
    """The position of a run (now, or ``at`` a :func:`position`), for errors: strategy,
    experience, epoch and batch."""
    names = "+".join(st.name for st in state.strategies) or "?"
    exp, epoch, step, iteration = position(state) if at is None else at
    if exp < 0:
        return f"in strategy {names}, meta-iteration {iteration + 1}"
    return f"in strategy {names}, experience {exp}, epoch {epoch + 1}, batch {step + 1}"


def check_parameters(state: RunState, params: list[torch.Tensor] | None = None) -> None:
    """Stop with :class:`NonFiniteError` when a weight is NaN or infinite (a gradient blew up
    although the loss was finite). The continual loop calls it once per experience and before
    every checkpoint (a weight gone non-finite mid-experience makes the next loss non-finite,
    which the per-epoch loss check names): one sum per tensor, one sync.
    ``params``: the model's parameters when the caller has them listed already."""
    params = list(state.model.parameters()) if params is None else params
    floats = [p for p in params if p.is_floating_point()]
    if not floats:
        return
    with torch.no_grad():  # NaN and inf propagate through sums
        total = torch.stack([p.sum().float() for p in floats]).sum()
    if not math.isfinite(total.item()):
        raise NonFiniteError(f"non-finite weights after {where(state)}; lower --lr")


class OptimStep:
    """Builds ``state.optimizer``/``state.scheduler`` and runs one step of a base loss."""

    def __init__(self, state: RunState, hooks: Any) -> None:
        self.state, self.hooks = state, hooks
        dtype = amp_dtype(state.device, getattr(state.config, "amp_dtype", "auto"))
        self.dtype = dtype if state.config.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype is torch.float16 and state.device.type == "cuda")
        self.extra: list[torch.nn.Parameter] = []
        self.params: list[torch.nn.Parameter] = []
        self.skip_non_finite = getattr(state.config, "on_nan", "stop") == "skip-batch"
        #: losses (and where they were computed) not checked for NaN/inf yet
        self.pending: list[torch.Tensor] = []
        #: the last step's total loss, detached (the loop logs it without detaching again)
        self.last_loss: torch.Tensor | None = None
        self.pending_at: list[tuple[int, int, int, int]] = []
        #: this step's :class:`ClosedFormLoss` terms, whose gradients are added after ``backward``
        self.closed_form: list[ClosedFormLoss] = []
        #: averages gradients over ranks (``None`` in one process: nothing to do per step)
        self.averager = distributed.GradientAverager() if distributed.is_distributed() else None

    def build(self, schedule_length: int) -> None:
        """A fresh optimizer over the model and every strategy's extra parameters, and the LR
        schedule over ``schedule_length`` scheduler steps (epochs or meta-iterations)."""
        s = self.state
        self.extra = [p for ps in self.hooks.cfs_extra_parameters(state=s) for p in (ps or [])]
        self.params = list(s.model.parameters())
        s.optimizer = build_optimizer(s.config, self.params + self.extra)
        s.scheduler = build_scheduler(s.config, s.optimizer, schedule_length)

    def total_loss(self, base: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``base()`` plus every ``cfs_loss`` term, under autocast when mixed precision is on."""
        if self.dtype is not None:
            with autocast(self.state.device, True, self.dtype):
                return self._sum(base)
        return self._sum(base)  # no context manager on the hot path when it would do nothing

    def _sum(self, base: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``base()`` plus every autograd ``cfs_loss`` term; :class:`ClosedFormLoss` terms are kept
        aside (their values join the logged loss, their gradients ``.grad``, after ``backward``)."""
        loss = base()
        self.closed_form = []
        for term in self.hooks.cfs_loss(state=self.state):
            if term is None:
                continue
            if isinstance(term, ClosedFormLoss):
                self.closed_form.append(term)
                continue
            loss = loss + term
        return loss

    def _logged(self, loss: torch.Tensor) -> torch.Tensor:
        """The detached total loss: ``loss`` plus every closed-form term's value (a deferred
        term is computed now)."""
        total = loss.detach()
        for term in self.closed_form:
            total = total + term.value
        return total

    def _add_closed_form_gradients(self) -> None:
        """Add every :class:`ClosedFormLoss` gradient, scaled like the loss was (fp16)."""
        if not self.closed_form:
            return
        scale = None
        if self.scaler.is_enabled():  # the loss scale as a device tensor: no read-back
            scale = self.scaler.scale(torch.ones((), device=self.state.device))
        for term in self.closed_form:
            term.add_gradient(scale)

    def __call__(self, base: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Total loss, backward (scaled for fp16 on CUDA), closed-form gradients added, gradients
        averaged over ranks, the backward hooks, optimizer step; returns the detached total loss.

        ``state.loss`` is the loss back-propagated until ``backward``; from ``cfs_after_backward``
        on it is the detached total, closed-form terms' values included.
        A non-finite loss stops the run with a one-line :class:`NonFiniteError` naming where
        (``on_nan: stop``, the default; checked at the next :meth:`check_losses`) or skips the
        batch's update (``on_nan: skip-batch``, decided before the update, the same on every
        rank)."""
        s, h = self.state, self.hooks
        loss = self.total_loss(base)
        s.loss = loss
        if self.skip_non_finite:  # the whole loss, closed-form values included, before the update
            self.last_loss = self._logged(loss)
            bad = distributed.any_rank(~torch.isfinite(self.last_loss))
            if bool(bad):  # one read per step: skipping must be decided before the update
                s.extra["skipped_batches"] = s.extra.get("skipped_batches", 0) + 1
                self.closed_form = []
                return self.last_loss
        h.cfs_before_backward(state=s)
        s.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self._add_closed_form_gradients()  # a deferred term is computed here, next to its use
        if not self.skip_non_finite:
            self.last_loss = self._logged(loss)
            self.pending.append(self.last_loss)
            self.pending_at.append(position(s))
            if len(self.pending) >= CHECK_EVERY:
                self.check_losses()
        self.closed_form = []
        s.loss = self.last_loss
        if self.averager is not None:
            self.averager(self.params + self.extra)
        h.cfs_after_backward(state=s)
        if self.scaler.is_enabled():
            self.scaler.step(s.optimizer)
            self.scaler.update()
        else:
            s.optimizer.step()
        return self.last_loss

    def check_losses(self) -> None:
        """The deferred non-finite check: one transfer for every loss since the last check (the
        same decision on every rank); raises :class:`NonFiniteError` naming the first step whose
        loss was NaN or infinite."""
        if self.averager is not None:
            self.averager.check()
        if not self.pending:
            return
        losses = distributed.all_reduce_sum(stack_scalars(self.pending))
        values, at = losses.tolist(), self.pending_at
        self.pending, self.pending_at = [], []
        for value, place in zip(values, at):
            if not math.isfinite(value):
                raise NonFiniteError(f"non-finite loss ({value:g}) {where(self.state, place)}; lower --lr, or pass "
                                     f"--on-nan skip-batch to skip such batches")
