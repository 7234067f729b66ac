"""Bases of the strategies whose classifier is a bank of class-mean prototypes.

Several methods classify by cosine similarity to class means of frozen features and differ only
in how they embed an image or how they turn a session's raw means into prototypes. Their common
part lives here, as :class:`cfs.teacher.TeacherStrategy` does for distillation, so a method
module subclasses a core base instead of importing another method's module:

* :class:`PrototypeStrategy` (training-free; SimpleCIL, APER): every experience's prototypes are
  the class means of :meth:`~PrototypeStrategy.embed_train`, prediction is the cosine to them
  of :meth:`~PrototypeStrategy.embed`. Override both to change the representation.
* :class:`SessionPrototypeStrategy` (FSCIL; the prototype baseline, TEEN): the engine trains the
  base session, whose class means then replace the head; every later session is training-free,
  its raw class means passed through :meth:`~SessionPrototypeStrategy.session_prototypes`.

Neither has a ``name``: they are not strategies a user can run, only bases of those that are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cfs import hookimpl
from cfs.features import cached_features, run_cache
from cfs.models.prototypes import PrototypeBank, class_means
from cfs.strategy import Strategy

if TYPE_CHECKING:  # pragma: no cover
    from cfs.engine.state import RunState


class PrototypeStrategy(Strategy):
    """Base: class-mean prototypes of frozen features, cosine prediction, nothing trained."""

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.bank = PrototypeBank()

    def embed_train(self, state: RunState) -> torch.Tensor:
        """Frozen features of the experience's training images (cached)."""
        return cached_features(state, state.train_data.x)

    def embed(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised evaluation batch (cached across evaluations)."""
        return run_cache(state).prepared(state.model.backbone, x)

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool:
        feats = self.embed_train(state)
        classes = state.experience.classes
        self.bank.set(classes, class_means(feats, state.train_data.y.to(feats.device), classes))
        return True

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        return self.bank.scores(self.embed(state, x))

    def state_dict(self) -> dict[str, Any]:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)


@dataclass
class SessionPrototypeOptions:
    """``scale``: cosine scale of prediction when the model's head has none of its own."""

    scale: float = 16.0


class SessionPrototypeStrategy(Strategy):
    """Base: engine-trained base session, then class-mean prototypes of frozen features.

    After the base session every base class's classifier becomes the mean embedding of its
    training images (test transform, eval mode, unnormalised); each later session's classes get
    :meth:`session_prototypes` of their raw means. Prediction is ``scale * cos(f(x), p_c)``
    over all seen classes (``scale`` = the cosine head's, else ``options.scale``).
    """

    compatibility = frozenset({"fscil"})
    Options = SessionPrototypeOptions

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.bank = PrototypeBank()
        self.n_base = 0

    def session_prototypes(self, new: torch.Tensor) -> torch.Tensor:
        """Prototypes of a novel session's classes from their raw class means (here: as is)."""
        return new

    def _means(self, state: RunState) -> torch.Tensor:
        feats = cached_features(state, state.train_data.x)
        return class_means(feats, state.train_data.y.to(feats.device), state.experience.classes)

    @hookimpl
    def cfs_train_experience(self, state: RunState) -> bool | None:
        if state.is_first_experience:
            return None  # the base session is trained by the engine
        self.bank.set(state.experience.classes, self.session_prototypes(self._means(state)))
        return True

    @hookimpl
    def cfs_after_training_exp(self, state: RunState) -> None:
        if state.is_first_experience:
            self.n_base = len(state.experience.classes)
            self.bank.set(state.experience.classes, self._means(state))

    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        scale = getattr(state.model.head, "scale", None)
        scale = float(scale) if scale is not None else self.options.scale
        return self.bank.scores(run_cache(state).prepared(state.model.backbone, x), scale)

    def state_dict(self) -> dict[str, Any]:
        return {**self.bank.state_dict(), "n_base": self.n_base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)
        self.n_base = state["n_base"]
