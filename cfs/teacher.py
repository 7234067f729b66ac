"""The frozen previous model: the teacher of every distillation-based continual strategy.

Continual learning uses distillation with the model from before the current experience as
the teacher and the model being trained as the student. :class:`PreviousModel` keeps such a
copy (evaluation mode, no gradients, its head as wide as the classes it had learnt);
:class:`TeacherStrategy` is the base of strategies that snapshot it after every experience.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from cfs import hookimpl
from cfs.engine.batch import Batch
from cfs.losses.kd import new_class_cross_entropy
from cfs.strategy import Strategy


#: The shared base loss of the teacher family (and EWC): strategies whose ``cfs_base_loss`` is
#: this computation compose, since they would all answer the same thing (cfs.composition).
NEW_CLASS_CE = "cfs.losses.new_class_cross_entropy"


@dataclass
class TeacherOptions:
    """Options every teacher strategy has.

    ``new_class_ce``: once a teacher exists, the base loss of a batch of new-class samples is
    the cross-entropy over the new-class logits only (PyCIL's LwF/EWC protocol), leaving the old
    logits to the distillation term; a batch holding old-class samples (a memory composed in)
    gets the cross-entropy over all seen classes. Off by default; a subclass's options turn it
    on where its paper's protocol does (LwF, KD, CLKD, NCKD, TRG, PCKD)."""

    new_class_ce: bool = False


def new_class_base_loss(state: Any, n_old: int) -> torch.Tensor | None:
    """The ``NEW_CLASS_CE`` base loss of the current batch, or ``None`` before any old class."""
    if n_old <= 0:
        return None
    batch, experience = state.batch, state.experience
    # the rows of an experience of classes >= n_old, nothing replayed: known on the host, no sync
    known = (isinstance(batch, Batch) and batch.drawn_replayed is None and not batch.segments
             and experience is not None and bool(experience.classes) and min(experience.classes) >= n_old)
    return new_class_cross_entropy(state.outputs, batch.y, n_old, all_new=True if known else None)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode whose parameters require no gradient."""
    twin = copy.deepcopy(model)
    twin.eval()
    twin.requires_grad_(False)
    return twin


def _truncate_head(model: nn.Module, n_classes: int) -> None:
    """Cut a growing head back to ``n_classes`` outputs (used when restoring a checkpoint)."""
    head = getattr(model, "head", None)
    if head is None or not hasattr(head, "weight"):
        return
    head.weight = nn.Parameter(head.weight.data[:n_classes].clone(), requires_grad=False)
    if getattr(head, "bias", None) is not None:
        head.bias = nn.Parameter(head.bias.data[:n_classes].clone(), requires_grad=False)


class PreviousModel:
    """A frozen snapshot of a ``ContinualModel`` and the number of classes it knew."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.n_classes = 0
        self._pending: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.model is not None or self._pending is not None

    def snapshot(self, model: nn.Module, n_classes: int) -> None:
        self.model = frozen_copy(model)
        self.n_classes = n_classes
        self._pending = None

    def ready(self, like: nn.Module) -> nn.Module | None:
        """The teacher, rebuilt from a restored state dict on first use (``like`` gives the
        architecture)."""
        if self.model is None and self._pending is not None:
            twin = frozen_copy(like)
            weights = self._pending["weights"]
            rows = weights["head.weight"].shape[0] if "head.weight" in weights else self._pending["n_classes"]
            _truncate_head(twin, rows)  # the snapshot's head width (DER++'s is the full scenario's)
            twin.load_state_dict(self._pending["weights"])
            self.model, self.n_classes, self._pending = twin, self._pending["n_classes"], None
        return self.model

    @torch.no_grad()
    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher features and the logits of the classes it knew (no graph is built). A head
        sized for the whole scenario up front (DER++'s) has more outputs than that."""
        feats, logits = self.model.forward_all(x)
        return feats, logits[:, : self.n_classes]

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.tokens(x)

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            return dict(self._pending) if self._pending else {}
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {"weights": weights, "n_classes": self.n_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model = None
        self._pending = dict(state) if state else None


class TeacherStrategy(Strategy):
    """Base class: after every experience, keep a frozen copy of the model as the teacher.

    Subclasses read ``self.teacher`` (a :class:`PreviousModel`) in their loss hooks; it is
    empty during the first experience. A subclass that also implements
    ``cfs_after_training_exp`` must call :meth:`take_snapshot` itself.
    """

    Options: ClassVar[type] = TeacherOptions
    shared_answers: ClassVar[dict[str, str]] = {"cfs_base_loss": NEW_CLASS_CE}
    #: a composed strategy with its own base loss (ER-ACE's) keeps it; the teacher adds its terms
    fallback_hooks: ClassVar[frozenset[str]] = frozenset({"cfs_base_loss"})

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.teacher = PreviousModel()

    def inactive_hooks(self) -> frozenset[str]:
        """``cfs_base_loss`` only with the explicit option ``new_class_ce``."""
        return frozenset() if self.options.new_class_ce else frozenset({"cfs_base_loss"})

    def take_snapshot(self, state: Any) -> None:
        self.teacher.snapshot(state.model, state.n_seen)

    def teacher_outputs(self, state: Any, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher (features, logits) of ``x`` (default: the current batch's inputs), computed
        once per training iteration however many terms read them."""
        if x is not None:
            return self.teacher.forward_all(x)
        key = (state.experience_index, state.iteration)
        if getattr(self, "_cache_key", None) != key:
            self._cache = self.teacher.forward_all(state.batch[0])
            self._cache_key = key
        return self._cache

    def active_teacher(self, state: Any) -> nn.Module | None:
        """The teacher when one exists and knows at least one class, else ``None``."""
        model = self.teacher.ready(state.model)
        return model if model is not None and self.teacher.n_classes > 0 else None

    def old_class_logits(self, state: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(student logits of the classes the teacher knows, teacher logits) of the current
        batch, the pair every logit-distillation term compares; ``None`` without a teacher."""
        if self.active_teacher(state) is None:
            return None
        _, old = self.teacher_outputs(state)
        return state.outputs[:, : self.teacher.n_classes], old

    @hookimpl
    def cfs_after_training_exp(self, state: Any) -> None:
        self.take_snapshot(state)

    @hookimpl
    def cfs_base_loss(self, state: Any) -> torch.Tensor | None:
        """Registered only with option ``new_class_ce`` (see :class:`TeacherOptions`)."""
        if self.active_teacher(state) is None:
            return None
        return new_class_base_loss(state, self.teacher.n_classes)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state.get("teacher", {}))
