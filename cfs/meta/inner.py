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
          x: torch.Tensor, y: torch.Tensor, loop: InnerLoop, functional: bool = False) -> Params:
    """Run the inner loop on one task's ``(x, y)``; return the adapted parameters.

    theta_{i+1} = theta_i - lr * grad CE(f(theta_i, x), y). Second order (default): the result
    stays differentiable in ``adapted`` and ``fixed`` through the gradients. First order: the
    gradients are constants to the outer loop. ``functional=True`` takes the inner gradients
    with :func:`torch.func.grad` (required inside :func:`torch.func.vmap`); the default uses
    plain autograd (``torch.autograd.grad(create_graph=True)``), which is cheaper for one task
    at a time: fused kernels (BatchNorm) stay usable and nothing is wrapped.
    """
    if functional:
        return _adapt_functional(forward, adapted, fixed, x, y, loop)
    fast, graph = adapted, torch.is_grad_enabled()
    with torch.enable_grad():  # prediction runs under no_grad; the inner loop still needs gradients
        for _ in range(loop.steps):
            if loop.first_order:
                probe = {k: v.detach().requires_grad_() for k, v in fast.items()}
                loss = F.cross_entropy(forward({**_detached(fixed), **probe}, x), y)
                g = torch.autograd.grad(loss, list(probe.values()), allow_unused=True, materialize_grads=True)
            else:
                loss = F.cross_entropy(forward({**fixed, **fast}, x), y)
                g = torch.autograd.grad(loss, list(fast.values()), create_graph=graph, allow_unused=True,
                                        materialize_grads=True)
            fast = {k: v - loop.lr * gk for (k, v), gk in zip(fast.items(), g)}
    return fast


def _adapt_functional(forward: Callable[[Params, torch.Tensor], torch.Tensor], adapted: Params, fixed: Params,
                      x: torch.Tensor, y: torch.Tensor, loop: InnerLoop) -> Params:
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


def default_vectorize(model: nn.Module, device: torch.device) -> bool:
    """Whether :func:`meta_query_logits` should vmap the tasks when not told.

    On a CPU a convolutional model is compute-bound: vmap turns each task's convolutions into
    one grouped convolution whose double backward (and the decomposed BatchNorm it needs) is
    slower than one task at a time on the fused kernels, so CPUs loop over the tasks of conv
    models. Models without convolutions (and every model on an accelerator, where per-task
    launches dominate) are vmapped."""
    if device.type != "cpu":
        return True
    return not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def meta_query_logits(model: nn.Module, tasks: EpisodeBatch, loop: InnerLoop, vectorize: bool | None = None,
                      chunk_size: int | None = None) -> torch.Tensor:
    """Adapt to each task's support set, then score its queries: (T, N*Q, N) logits.

    ``vectorize`` runs the tasks in one :func:`torch.func.vmap` (``chunk_size`` tasks at a
    time when given: bounds the working set of large models); ``False`` loops over them on
    plain autograd (same numbers, no module clones); ``None`` picks by
    :func:`default_vectorize`."""
    adapted, fixed = split_parameters(model, loop.adapt)
    forward = episode_forward(model, tasks.n_way)
    if vectorize is None:
        vectorize = default_vectorize(model, tasks.query_x.device)
    if not vectorize:
        return torch.stack([forward({**fixed, **adapt(forward, adapted, fixed, tasks.support_x[t], tasks.support_y[t],
                                                      loop)}, tasks.query_x[t]) for t in range(tasks.n_tasks)])

    def one_task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        fast = _adapt_functional(forward, adapted, fixed, sx, sy, loop)
        return forward({**fixed, **fast}, qx)

    _check_vmappable(model)
    return vmap(one_task, randomness="different", chunk_size=chunk_size)(tasks.support_x, tasks.support_y,
                                                                          tasks.query_x)


def _check_vmappable(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise CfsError(f"BatchNorm {name!r} cannot run under vmap with exact meta-gradients: "
                           "call cfs.meta.use_batch_statistics(model) first (MAML's transductive BN)")
