"""FACT (Zhou, Wang, Ye, Ma, Pu, Zhan; CVPR 2022, "Forward Compatible Few-Shot
Class-Incremental Learning").

[CODE, zhoudw-zdw/CVPR22-Fact ``models/fact``] **Base session.** A cosine classifier with one row
per class of the whole stream (``pre_allocate = num_classes``, orthogonally initialised): the
base rows are real classifiers, the other rows are *virtual prototypes* reserved for the classes
to come. With ``f`` the backbone feature and ``s`` the temperature (16), logits are
``s * cos(f, w_c)`` over all rows, and the loss is (:func:`fact_loss`)

    L = CE(logits[:, :B], y) + balance * (L2 + L3 + L4)

* ``L2`` (forward compatibility of real data): the true class masked out (-1e9), the target is
  the virtual class with the largest ``masked logit * mask[y]`` (``mask`` assigns each virtual
  class ``masknum = 3`` random base classes, fixed for the run);
* **manifold mixup**: ``beta ~ Beta(alpha, alpha)``, hidden maps after the backbone's second to
  last stage (``pre_encode``) mixed with a shuffled copy of the batch, the rest of the backbone
  (``post_encode``) on the mix; rows whose two labels differ are kept. ``L3`` pulls a mix towards
  its most likely virtual class, ``L4`` (that virtual class masked out) towards its most likely
  base class.

After the base session the base rows become the class means of the base training images and the
virtual rows are kept, normalised, as the *dummy classifiers* ``V``. **Incremental sessions**
are training-free: each new class's row is the mean of its shots. **Inference**
(``test_intergrate``, every incremental session; the base session uses the plain cosine logits):

    P = V @ normalize(W[:C].T, dim=-1)                      (virtual x seen)
    r = top-k(normalize(f) @ V.T)  (other entries 0, k = 40)
    p = eta * softmax(r @ P) + (1 - eta) * softmax(s * cos(f, W[:C]))

``normalize(W.T, dim=-1)`` normalises each feature dimension across the seen classes; that is
what the code computes and what cfs computes (``-o fact.calibration=false`` switches the
virtual-class term off). Defaults: the README's CIFAR-100 command (``-balance 0.001 -loss_iter 0
-alpha 0.5 -temperature 16``) and the code's ``eta 0.1``, ``masknum 3``, top-k 40 (capped at the
number of virtual classes). The engine's optimizer and schedule train the base session (the
command uses SGD, lr 0.1, Nesterov, cosine); ``--head`` is not used by FACT (its classifier is
its own). The code selects the base epoch with the best test accuracy; cfs keeps the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.errors import CfsError
from cfs.features import run_cache
from cfs.prototype_strategy import SessionPrototypeStrategy
from cfs.registry import Registry

NEG = -1e9  # the code's masked_fill value


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    return temperature * F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).T


def forward_compatible_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, n_base: int) -> torch.Tensor:
    """``L2``: with the true class masked out, cross-entropy towards the virtual class of largest
    ``masked logit * mask[y]`` (``logits`` over base + virtual rows, ``mask`` (B, K) 0/1)."""
    masked = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), NEG)
    chosen = masked * mask[y]
    pseudo = chosen[:, n_base:].argmax(1) + n_base
    return F.cross_entropy(masked, pseudo)


def mixup_virtual_losses(mixed_logits: torch.Tensor, n_base: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``L3`` and ``L4`` of mixed rows: towards their most likely virtual class, then (that class
    masked out) towards their most likely base class."""
    virtual = mixed_logits[:, n_base:].argmax(1) + n_base
    base = mixed_logits[:, :n_base].argmax(1)
    l3 = F.cross_entropy(mixed_logits, virtual)
    masked = mixed_logits.masked_fill(F.one_hot(virtual, mixed_logits.shape[1]).bool(), NEG)
    return l3, F.cross_entropy(masked, base)


def fact_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, n_base: int,
              mixed_logits: torch.Tensor | None, balance: float) -> torch.Tensor:
    """FACT's base-session loss: ``CE(logits[:, :B], y) + balance * (L2 + L3 + L4)``;
    ``mixed_logits`` holds the kept (different-label) mixed rows, ``None`` when there are none."""
    loss = F.cross_entropy(logits[:, :n_base], y)
    extra = forward_compatible_loss(logits, y, mask, n_base)
    if mixed_logits is not None and mixed_logits.shape[0]:
        l3, l4 = mixup_virtual_losses(mixed_logits, n_base)
        extra = extra + l3 + l4
    return loss + balance * extra


def virtual_calibrated_scores(features: torch.Tensor, weight: torch.Tensor, dummy: torch.Tensor, eta: float,
                              temperature: float, topk: int) -> torch.Tensor:
    """FACT's ``test_intergrate`` scores over the ``weight`` rows (seen classes)."""
    proj_matrix = dummy @ F.normalize(weight.T, dim=-1)
    proj = F.normalize(features, dim=-1) @ dummy.T
    top, idx = proj.topk(min(topk, proj.shape[1]), dim=1)
    kept = torch.zeros_like(proj).scatter(1, idx, top)
    return eta * torch.softmax(kept @ proj_matrix, 1) + (1 - eta) * torch.softmax(
        cosine_logits(features, weight, temperature), 1)


def split_backbone(backbone: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(pre_encode, post_encode) for manifold mixup: a small-image ResNet is cut before its last
    stage (the code's cut after ``layer2`` of ResNet-20), an MLP before its last layer."""
    if hasattr(backbone, "stages") and hasattr(backbone, "stem") and len(backbone.stages) > 1:
        pre = nn.Sequential(backbone.stem, *backbone.stages[:-1])
        return pre, _PoolAfter(backbone.stages[-1])
    net = getattr(backbone, "net", None)
    if isinstance(net, nn.Sequential) and len(net) >= 3:
        return net[:-2], net[-2:]
    raise CfsError("FACT's manifold mixup needs a ResNet (resnet20/resnet32/reduced-resnet18) or mlp backbone")


class _PoolAfter(nn.Module):
    def __init__(self, stage: nn.Module) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(x).mean((2, 3))


@dataclass
class FactOptions:
    #: weight of the forward-compatible terms (``-balance``; 0.001 CIFAR-100, 0.01 CUB/mini-ImageNet)
    balance: float = 0.001
    #: Beta(alpha, alpha) of manifold mixup (``-alpha``)
    alpha: float = 0.5
    #: first base epoch with the extra terms (``-loss_iter``)
    loss_iter: int = 0
    #: weight of the virtual-class term at inference (``-eta``)
    eta: float = 0.1
    temperature: float = 16.0
    #: base classes assigned to each virtual class in the mask
    masknum: int = 3
    topk: int = 40
    #: virtual classes; 0 = as many as the stream's novel classes (the code's num_classes - base)
    virtual: int = 0
    calibration: bool = True
    scale: float = 16.0  # for the prototype base class; prediction uses ``temperature``

    def __post_init__(self) -> None:
        if self.balance < 0 or self.alpha <= 0 or not 0 <= self.eta <= 1:
            raise ValueError("FACT needs balance >= 0, alpha > 0 and 0 <= eta <= 1")
        if self.masknum < 1 or self.topk < 1 or self.virtual < 0 or self.loss_iter < 0:
            raise ValueError("masknum and topk must be >= 1, virtual and loss_iter >= 0")


class Fact(SessionPrototypeStrategy):
    """FACT: virtual prototypes and manifold mixup for forward-compatible few-shot class-incremental learning."""

    name = "fact"
    Options = FactOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.weight: nn.Parameter | None = None
        self.mask: torch.Tensor | None = None
        self.dummy: torch.Tensor | None = None
        self._split: tuple[nn.Module, nn.Module] | None = None
        self._logits: torch.Tensor | None = None

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        exps = state.scenario.experiences
        n_base = len(exps[0].classes)
        n_virtual = self.options.virtual or sum(len(e.classes) for e in exps[1:])
        if n_virtual < 1:
            raise CfsError("FACT needs at least one virtual class: pass -o fact.virtual=N")
        self._split = split_backbone(state.model.backbone)
        dim = state.model.head.in_features
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator)))
        w = nn.init.orthogonal_(torch.empty(n_base + n_virtual, dim), generator=g)  # the code's init of fc
        self.weight = nn.Parameter(w.to(state.device))
        mask = torch.zeros(n_base, n_base + n_virtual)
        for v in range(n_virtual):
            picked = torch.randperm(n_base, generator=g)[: min(self.options.masknum, n_base)]
            mask[picked, n_base + v] = 1.0
        self.mask = mask.to(state.device)
        self.n_base = n_base

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter] | None:
        return [self.weight] if state.is_first_experience else None

    @hookimpl
    def cfs_after_forward(self, state: RunState) -> None:
        if state.is_first_experience:
            self._logits = cosine_logits(state.features, self.weight, self.options.temperature)
            state.outputs = self._logits[:, : self.n_base]

    @hookimpl
    def cfs_base_loss(self, state: RunState) -> torch.Tensor | None:
        if not state.is_first_experience:
            return None
        o, (x, y) = self.options, state.batch
        if state.epoch < o.loss_iter:
            return F.cross_entropy(self._logits[:, : self.n_base], y)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=state.generator)))
        beta = float(rng.beta(o.alpha, o.alpha))
        index = torch.randperm(len(y), generator=state.generator).to(y.device)
        pre, post = self._split
        hidden = pre(x)
        keep = y[index] != y
        mixed = None
        if bool(keep.any()):  # the whole mixed batch goes through post_encode (its BatchNorm), as in the code
            mixed_features = post(beta * hidden + (1 - beta) * hidden[index])
            mixed = cosine_logits(mixed_features, self.weight, o.temperature)[keep]
        return fact_loss(self._logits, y, self.mask, self.n_base, mixed, o.balance)

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        super().cfs_after_training_exp(state)
        if state.is_first_experience:
            self.dummy = F.normalize(self.weight.detach()[self.n_base :], dim=-1)

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        feats = run_cache(state).prepared(state.model.backbone, x)
        weight = self.bank.prototypes[: state.n_seen].to(feats.device)
        if state.n_seen <= self.n_base or not o.calibration:
            return cosine_logits(feats, weight, o.temperature)
        return virtual_calibrated_scores(feats, weight, self.dummy.to(feats.device), o.eta, o.temperature, o.topk)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "dummy": self.dummy, "mask": self.mask}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.dummy, self.mask = state["dummy"], state["mask"]


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(Fact)
