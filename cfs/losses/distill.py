"""The teacher-student losses of ``cfs distill``, registered by name like any plugin's.

``cfs distill --loss NAME`` looks ``NAME`` up in ``pm.distill_losses``, filled by the
``cfs_add_distill_losses`` hook, so a third-party plugin adds a loss with no change here::

    @hookimpl
    def cfs_add_distill_losses(registry):
        registry.add(MyLoss())   # .name, a docstring, .build(...) -> Distillation

A registered loss is an object with ``name``, a docstring whose first line ``cfs plugins``
shows, and :meth:`DistillLoss.build`, called once per run with the frozen teacher and the
fresh student; it returns a :class:`Distillation`. The five of the seed papers below hold
their METHODS.md defaults as fields and compute their terms with the same functions of
:mod:`cfs.losses` that the continual strategies (``--strategy kd`` ...) call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from cfs import hookimpl
from cfs.losses.clkd import CLKD_FORMS, clkd_loss
from cfs.losses.kd import kd_loss
from cfs.losses.nckd import ClassMeanEMA, centred_directions, class_means, nc3_logits, nckd_loss
from cfs.losses.pckd import PCKDHeads, pckd_loss, rotated_views, view_features
from cfs.losses.trg import TokenProjector, align_tokens, trg_loss

if TYPE_CHECKING:  # pragma: no cover
    from cfs.registry import Registry

#: ``extra(x, y, features, logits, epoch) -> loss`` for one training batch of the student
#: (normalised inputs, labels, its features and logits; ``epoch`` is 1-based), added to the CE.
ExtraLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class Distillation:
    """What a distillation loss adds to the student's training: the extra term, the
    parameters outside the student it trains (projectors), the weight of the student's CE, and
    optionally one more line for the command's report, computed after training."""

    extra: ExtraLoss
    parameters: list[nn.Parameter] = field(default_factory=list)
    ce_weight: float = 1.0
    report: Callable[[], str] | None = None


class DistillLoss(Protocol):
    """The interface of a registered distillation loss."""

    name: str

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        """Set up the loss for distilling the frozen ``teacher`` into ``student`` (both
        ``ContinualModel``s) on ``data`` (a :class:`cfs.data.arrays.DataSplit`, raw rows that
        ``transform(x, train=False)`` normalises) and return its :class:`Distillation`."""
        ...


def _embed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, transform: Any) -> torch.Tensor:
    """``fn`` of every raw row of ``x`` under the test transform, 500 rows at a time."""
    return torch.cat([fn(transform(x[i : i + 500])) for i in range(0, len(x), 500)])


@dataclass(frozen=True)
class KDLoss:
    """Hinton et al. 2015: T^2 KL between softened teacher and student logits (T 4)."""

    name: ClassVar[str] = "kd"
    T: float = 4.0

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        return Distillation(lambda x, y, f, z, e: kd_loss(z, teacher(x), self.T))


@dataclass(frozen=True)
class CLKDLoss:
    """CLKD (Zhang et al. 2022): instance, class and class-correlation logit terms, CE weight 0.1.

    ``form`` compares the class-correlation matrices as :mod:`cfs.losses.clkd` describes:
    ``pearson`` (default, as the clkd strategy: the raw-logit squared covariance term diverges),
    ``covariance`` (the stable non-squared Frobenius norm) or ``squared-covariance``
    (METHODS.md 4.2's equation); ``cfs distill --loss clkd --clkd-form covariance`` sets it."""

    name: ClassVar[str] = "clkd"
    ce_weight: float = 0.1
    form: str = "pearson"

    def __post_init__(self) -> None:
        if self.form not in CLKD_FORMS:
            raise ValueError(f"unknown CLKD form {self.form!r} (use one of {', '.join(CLKD_FORMS)})")

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        return Distillation(lambda x, y, f, z, e: clkd_loss(z, teacher(x), form=self.form), [], self.ce_weight)


@dataclass(frozen=True)
class NCKDLoss:
    """NCKD (Zhang et al. AAAI 2025): KD, NC1 prototype alignment and NC2 Gram transfer, NC3 head."""

    name: ClassVar[str] = "nckd"
    T: float = 4.0
    momentum: float = 0.9

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        """A projector (linear + BN) from the student's width to the teacher's; the teacher's
        class directions over the whole training set; after training, the post-hoc NC3 head."""
        d_s, d_t, n = student.backbone.out_dim, teacher.backbone.out_dim, teacher.num_classes
        proj = nn.Sequential(nn.Linear(d_s, d_t), nn.BatchNorm1d(d_t)).to(device)
        with torch.no_grad():
            feats = _embed(teacher.features, data.train.x.to(device), transform)
            means, glob, present = class_means(feats, data.train.y.to(device), n)
            t_dirs = centred_directions(means, glob)
        ema = ClassMeanEMA(n, d_t, self.momentum, device)

        def extra(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, z: torch.Tensor, e: int) -> torch.Tensor:
            return nckd_loss(z, teacher(x), proj(f), y, t_dirs, glob, present, ema, T=self.T)

        def report() -> str:
            acc = nc3_accuracy(student, proj, data, transform, device)
            return f"distilled, NC3 head:    {100 * acc:6.2f}%  (cosine to the student's class means)"

        return Distillation(extra, list(proj.parameters()), 1.0, report)


@torch.no_grad()
def nc3_accuracy(model: nn.Module, projector: nn.Module, data: Any, transform: Any, device: torch.device) -> float:
    """Test accuracy of NCKD's post-hoc NC3 head: the student's linear head replaced by the
    cosine classifier to its normalised centred class means in projected space, computed over
    the training set with the test transform (METHODS.md 5.2)."""
    model.eval()
    projector.eval()

    def embed(x: torch.Tensor) -> torch.Tensor:
        return _embed(lambda b: projector(model.features(b)), x, transform)

    means, glob, _ = class_means(embed(data.train.x.to(device)), data.train.y.to(device), data.num_classes)
    pred = nc3_logits(embed(data.test.x.to(device)), centred_directions(means, glob)).argmax(1)
    model.train()
    projector.train()
    return float((pred == data.test.y.to(device)).float().mean())


@dataclass(frozen=True)
class TRGLoss:
    """TRG (Zhang, Liu, He 2023): KD plus token-graph, contextual and node losses via a projector.

    The student's tokens pass through METHODS.md 6.2's projector, a linear map to the teacher's
    width followed by BatchNorm (:class:`cfs.losses.trg.TokenProjector`), before the token losses."""

    name: ClassVar[str] = "trg"
    T: float = 4.0

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        probe = torch.zeros(2, *data.input_shape, device=device)
        was_training = student.training
        student.eval()  # the probe must not touch the student's BatchNorm statistics
        with torch.no_grad():
            dims = student.tokens(probe).shape[-1], teacher.tokens(probe).shape[-1]
        student.train(was_training)
        proj = TokenProjector(*dims).to(device)
        g = torch.Generator().manual_seed(0)

        def extra(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, z: torch.Tensor, e: int) -> torch.Tensor:
            with torch.no_grad():
                t_tok = teacher.tokens(x)
            s_tok, t_tok = align_tokens(proj(student.tokens(x)), t_tok)
            return kd_loss(z, teacher(x), self.T) + trg_loss(s_tok, t_tok, generator=g)

        return Distillation(extra, list(proj.parameters()))


@dataclass(frozen=True)
class PCKDLoss:
    """PCKD (Ding et al. 2025): preview-weighted KD, category contrast, centre and feature alignment."""

    name: ClassVar[str] = "pckd"
    views: int = 4
    beta: float = 0.1

    def build(self, teacher: nn.Module, student: nn.Module, data: Any, transform: Any,
              device: torch.device) -> Distillation:
        heads = PCKDHeads(student.backbone.out_dim, teacher.backbone.out_dim).to(device)
        n = teacher.num_classes

        def extra(x: torch.Tensor, y: torch.Tensor, f: torch.Tensor, z: torch.Tensor, e: int) -> torch.Tensor:
            f_s = view_features(student, x, f, self.views)
            with torch.no_grad():
                f_t, z_t = teacher.forward_all(rotated_views(x, self.views))
            return pckd_loss(heads, f_s, z, y, f_t, z_t, student.head, teacher.head, n, e, beta=self.beta)

        return Distillation(extra, list(heads.parameters()))


@hookimpl
def cfs_add_distill_losses(registry: "Registry") -> None:
    for loss in (KDLoss(), CLKDLoss(), NCKDLoss(), TRGLoss(), PCKDLoss()):
        registry.add(loss)
