"""MAML-style inner-loop adaptation written functionally with ``torch.func``.

Why functional: cloning a module per task (learn2learn's ``clone()``) costs Python work per
task and per parameter; with parameters held in a dict the same adaptation of every task of a
meta-batch is one ``vmap``-ed computation, and second-order meta-gradients are ordinary
autograd through :func:`torch.func.grad`.

Which parameters adapt (``InnerLoop.adapt``): ``"all"`` (MAML), ``"head"`` (ANIL: the body
is frozen in the inner loop) or ``"body"`` (BOIL: the head is frozen in the inner loop). The
non-adapted ones are still meta-learned by the outer loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from cfs.errors import CfsError
from cfs.scenarios.episodes import EpisodeBatch

Params = dict[str, torch.Tensor]
ADAPT_CHOICES = ("all", "head", "body")


@dataclass(frozen=True)
class InnerLoop:
    """``steps`` SGD steps of size ``lr`` on the support cross-entropy.

    ``first_order`` treats the inner gradients as constants (FOMAML: d theta'/d theta = I).
    """

    steps: int = 1
    lr: float = 0.4
    first_order: bool = False
    adapt: str = "all"

    def __post_init__(self) -> None:
        if self.adapt not in ADAPT_CHOICES:
            raise CfsError(f"unknown inner-loop parameter set {self.adapt!r}: use one of {', '.join(ADAPT_CHOICES)}")
        if self.steps < 0:
            raise CfsError(f"inner steps must be >= 0, got {self.steps}")


def split_parameters(model: nn.Module, adapt: str) -> tuple[Params, Params]:
    """``(adapted, fixed)``: the named parameters the inner loop updates, and everything else
    the model needs (the other parameters and all buffers). Names are the model's own, so
    ``{**fixed, **adapted}`` is a complete input for :func:`functional_call`. A ``ContinualModel``
    names its body ``backbone.*`` and its classifier ``head.*``."""
    if adapt not in ADAPT_CHOICES:
        raise CfsError(f"unknown inner-loop parameter set {adapt!r}: use one of {', '.join(ADAPT_CHOICES)}")
    adapted, fixed = {}, {}
    for name, p in model.named_parameters():
        is_head = name.startswith("head.")
        take = adapt == "all" or (adapt == "head") == is_head
        (adapted if take and p.requires_grad else fixed)[name] = p
    fixed.update(dict(model.named_buffers()))
    if not adapted:
        raise CfsError(f"the model has no trainable {adapt} parameters to adapt in the inner loop")
    return adapted, fixed


def episode_forward(model: nn.Module, n_way: int) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """``f(params, x)`` -> the first ``n_way`` logits of ``model`` run with ``params``.

    The head of an episodic run may have more outputs than a task's ways (it is sized for the
    largest way of training and evaluation); a task uses the first ``n_way``."""

    def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x,))[..., :n_way]

    return forward


def _detached(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def adapt(forward: Callable[[Params, torch.Tensor], torch.Tensor], adapted: Params, fixed: Params,
          x: torch.Tensor, y: torch.Tensor, loop: InnerLoop) -> Params:
    """Run the inner loop on one task's ``(x, y)``; return the adapted parameters.

    theta_{i+1} = theta_i - lr * grad CE(f(theta_i, x), y). Second order (default): the result
    stays differentiable in ``adapted`` and ``fixed`` through the gradients. First order: the
    gradients are computed at detached inputs, so they are constants to the outer loop.
    Works per task inside :func:`torch.func.vmap` as well as outside it.
    """

    def support_loss(a: Params, f: Params) -> torch.Tensor:
        return F.cross_entropy(forward({**f, **a}, x), y)

    inner_grad = grad(support_loss)
    fast = adapted
    for _ in range(loop.steps):
        if loop.first_order:
            g = inner_grad(_detached(fast), _detached(fixed))
        else:
            g = inner_grad(fast, fixed)
        fast = {k: fast[k] - loop.lr * g[k] for k in fast}
    return fast


def meta_query_logits(model: nn.Module, tasks: EpisodeBatch, loop: InnerLoop, vectorize: bool = True) -> torch.Tensor:
    """Adapt to each task's support set, then score its queries: (T, N*Q, N) logits.

    ``vectorize`` runs all tasks in one ``vmap``; ``False`` loops over them (same numbers;
    for models with operations that vmap cannot batch)."""
    adapted, fixed = split_parameters(model, loop.adapt)
    forward = episode_forward(model, tasks.n_way)

    def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        fast = adapt(forward, adapted, fixed, sx, sy, loop)
        return forward({**fixed, **fast}, qx)

    if vectorize:
        _check_vmappable(model)
        return vmap(one_task, randomness="different")(tasks.support_x, tasks.support_y, tasks.query_x)
    return torch.stack([one_task(tasks.support_x[t], tasks.support_y[t], tasks.query_x[t])
                        for t in range(tasks.n_tasks)])


def _check_vmappable(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise CfsError(f"BatchNorm {name!r} cannot run under vmap with exact meta-gradients: "
                           "call cfs.meta.use_batch_statistics(model) first (MAML's transductive BN)")
