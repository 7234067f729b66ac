"""TRG (Zhang, Liu, He 2023; METHODS.md 6) as a continual regularizer.

Teacher = previous model. On each batch:
``kd * KD_T(old logits) + graph * L_graph + context * L_ctx + node * L_node`` over the tokens
of the last feature map (CNNs) or the patch tokens (ViTs), read through ``model.tokens(x)``
(one extra forward of the student). Student and teacher share an architecture, so no
projector is needed; ``cfs distill --loss trg`` adds one (linear + BatchNorm, METHODS.md 6.2)
for different backbones. The contextual loss is Mechrez et al.'s with METHODS.md 6.2's
corrected axes (normalised over the teacher's tokens per student token, each teacher token's
best student match averaged), so a student collapsing onto one teacher token is penalised.
Defaults T 4, weights 1 except graph 0.1 (at METHODS.md's 1 the graph term collapsed the
features on split-digits at lr 0.05: ``-o trg.graph=1`` restores it), tau_g 0.1; above 4096 graph nodes 16 tokens per image are kept.

``new_class_ce`` (default, LwF's protocol): once a teacher exists, a new-class sample's CE
sees only the new-class logits, so the distillation term alone speaks for the old classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cfs import hookimpl
from cfs.engine.state import RunState
from cfs.losses import kd_loss, trg_loss
from cfs.registry import Registry
from cfs.teacher import TeacherOptions, TeacherStrategy


@dataclass
class TRGOptions(TeacherOptions):
    kd: float = 1.0
    T: float = 4.0
    graph: float = 0.1
    context: float = 1.0
    node: float = 1.0
    tau: float = 0.1
    context_form: str = "cx"
    new_class_ce: bool = True


class TRG(TeacherStrategy):
    """Token-level relationship graph distillation (graph, contextual and node losses)."""

    name = "trg"
    compatibility = frozenset({"class-incremental"})
    Options = TRGOptions

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        if self.active_teacher(state) is None:
            return None
        o = self.options
        x = state.batch[0]
        _, old = self.teacher_outputs(state)
        loss = o.kd * kd_loss(state.outputs[:, : self.teacher.n_classes], old, o.T)
        tokens = trg_loss(state.model.tokens(x), self.teacher.tokens(x), o.graph, o.context, o.node, o.tau,
                          o.context_form, generator=state.generator)
        return loss + tokens


@hookimpl
def cfs_add_strategies(registry: Registry) -> None:
    registry.add(TRG)
