"""The one optimisation step both loops share.

The continual loop (one batch of an experience) and the episodic loop (one meta-batch) differ
in how they get the base loss: cross-entropy of the model's logits, or a strategy's
``cfs_meta_loss``. Everything after that is the same and lives here once: the optimizer and
LR schedule built with every ``cfs_extra_parameters``, autocast and the GradScaler, the extra
``cfs_loss`` terms every composed strategy adds, ``cfs_before_backward``/``cfs_after_backward``,
and the optimizer step.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from cfs.engine.devices import autocast
from cfs.engine.optim import build_optimizer, build_scheduler
from cfs.engine.state import RunState
from cfs.errors import CfsError


class NonFiniteError(CfsError):
    """The run diverged: a loss or the weights became NaN or infinite."""


def where(state: RunState) -> str:
    """The position of a run, for errors: strategy, experience, epoch and batch."""
    names = "+".join(st.name for st in state.strategies) or "?"
    if state.experience is None:
        return f"in strategy {names}, meta-iteration {state.iteration + 1}"
    return (f"in strategy {names}, experience {state.experience_index}, epoch {state.epoch + 1}, "
            f"batch {state.step_in_epoch + 1}")


def check_parameters(state: RunState, params: list[torch.Tensor] | None = None) -> None:
    """Stop with :class:`NonFiniteError` when a weight is NaN or infinite (a gradient blew up
    although the loss was finite). Called once per epoch: one sum per tensor, one sync.
    ``params``: the model's parameters when the caller has them listed already."""
    params = list(state.model.parameters()) if params is None else params
    sums = [p.detach().float().sum() for p in params if p.is_floating_point()]
    if sums and not math.isfinite(torch.stack(sums).sum().item()):  # NaN and inf propagate through sums
        raise NonFiniteError(f"non-finite weights after {where(state)}; lower --lr")


class OptimStep:
    """Builds ``state.optimizer``/``state.scheduler`` and runs one step of a base loss."""

    def __init__(self, state: RunState, hooks: Any) -> None:
        self.state, self.hooks = state, hooks
        self.scaler = torch.amp.GradScaler("cuda", enabled=state.config.amp and state.device.type == "cuda")
        self.extra: list[torch.nn.Parameter] = []
        self.params: list[torch.nn.Parameter] = []

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
        if self.state.config.amp:
            with autocast(self.state.device, True):
                return self._sum(base)
        return self._sum(base)  # no context manager on the hot path when it would do nothing

    def _sum(self, base: Callable[[], torch.Tensor]) -> torch.Tensor:
        loss = base()
        for term in self.hooks.cfs_loss(state=self.state):
            if term is not None:
                loss = loss + term
        return loss

    def __call__(self, base: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Total loss, backward (scaled for fp16 on CUDA), the backward hooks, optimizer step.

        A non-finite loss stops the run with a one-line :class:`NonFiniteError` naming where
        (``on_nan: stop``, the default) or skips the batch's update (``on_nan: skip-batch``)."""
        s, h = self.state, self.hooks
        loss = self.total_loss(base)
        s.loss = loss
        value = loss.detach().item()  # one sync; torch.isfinite on a scalar costs ~10x more on CPU
        if not math.isfinite(value):
            if getattr(s.config, "on_nan", "stop") != "skip-batch":
                raise NonFiniteError(f"non-finite loss ({value:g}) {where(s)}; lower --lr, or pass "
                                     f"--on-nan skip-batch to skip such batches")
            s.extra["skipped_batches"] = s.extra.get("skipped_batches", 0) + 1
            return loss.detach()
        h.cfs_before_backward(state=s)
        s.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            h.cfs_after_backward(state=s)
            self.scaler.step(s.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            h.cfs_after_backward(state=s)
            s.optimizer.step()
        return loss
