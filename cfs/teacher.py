"""The frozen previous model: the teacher of every distillation-based continual strategy.

Continual learning uses distillation with the model from before the current experience as
the teacher and the model being trained as the student. :class:`PreviousModel` keeps such a
copy (evaluation mode, no gradients, its head as wide as the classes it had learnt);
:class:`TeacherStrategy` is the base of strategies that snapshot it after every experience.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from cfs import hookimpl
from cfs.losses.kd import new_class_cross_entropy
from cfs.strategy import Strategy


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
            _truncate_head(twin, self._pending["n_classes"])
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

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.teacher = PreviousModel()

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
        """With option ``new_class_ce`` (LwF's protocol, PyCIL), the CE of a new-class sample
        sees only the new-class logits once a teacher exists; the teacher's distillation term
        is then what keeps the old classes."""
        if not getattr(self.options, "new_class_ce", False) or self.active_teacher(state) is None:
            return None
        return new_class_cross_entropy(state.outputs, state.batch[1], self.teacher.n_classes)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state.get("teacher", {}))
