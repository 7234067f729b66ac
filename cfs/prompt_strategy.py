"""Base of the prompt-based continual learners on a frozen ViT (L2P, DualPrompt, CODA-Prompt).

The three methods share everything but how a query turns into prompts, so that part lives here
once, as :class:`cfs.prototype_strategy.PrototypeStrategy` does for class-mean methods:

* the backbone must contain a timm ``VisionTransformer``; it is frozen (``requires_grad``
  off) before the first experience; only the method's prompt parameters (through
  ``cfs_extra_parameters``) and the run's classifier head train;
* the **query** of an image is the frozen, un-prompted backbone's feature (the ViT's [CLS]
  after its final norm), as in the official code. Training queries come from the run's feature
  cache (:func:`cfs.features.cached_features`: each training image is embedded once per
  experience, without augmentation); evaluation queries from the cache of prepared batches.
  ``query=augmented`` instead embeds every augmented training batch, as the official code does
  (one more frozen forward per step);
* per training batch, :meth:`PromptStrategy.prompt_inputs` maps the queries to
  :class:`cfs.models.prompts.PromptInputs` (and an auxiliary loss); they are inserted into the
  engine's own forward pass only (set by the last ``cfs_before_batch``, after every composed
  strategy has appended its replayed rows, and removed by the first ``cfs_after_forward``), so
  the engine's step, mixed precision and every composed ``cfs_loss`` apply unchanged, and a
  composed strategy's own forward passes see the plain backbone;
* ``train_mask`` (official ``train_mask=True``): during training the logits of classes outside
  the current experience are set to ``-inf`` before the cross-entropy (``cfs_base_loss``) for
  the experience's own rows (rows a composed strategy replays from a memory keep every seen
  class); evaluation scores all seen classes;
* ``clip_grad`` (official ``--clip-grad 1.0`` of L2P/DualPrompt; CODA-Prompt does not clip, 0):
  the gradient norm of every trained parameter is clipped after backward;
* prediction (``cfs_predict``) inserts the prompts chosen for the evaluation batch.

Checkpointing: ``state_dict`` holds the shapes (``spec``) and tensors of the prompt parameters
and the method's counters; ``load_state_dict`` rebuilds them without a run, so a fresh instance
predicts like the saved one. ``backbone_family = "vit"`` declares that the strategy runs only on
a backbone that :func:`cfs.models.peft.backbone_family` calls a ViT.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cfs import hookimpl
from cfs.errors import CfsError
from cfs.features import cached_features, run_cache
from cfs.models.prompts import PromptedViT, PromptInputs, prompted
from cfs.strategy import Strategy

if TYPE_CHECKING:  # pragma: no cover
    from cfs.engine.state import RunState

QUERIES = ("cached", "augmented")


@dataclass
class PromptOptions:
    """Options every prompt-based strategy has."""

    query: str = "cached"
    train_mask: bool = True
    clip_grad: float = 1.0

    def __post_init__(self) -> None:
        if self.query not in QUERIES:
            raise ValueError(f"query must be one of {', '.join(QUERIES)}, got {self.query!r}")
        if self.clip_grad < 0:
            raise ValueError(f"clip_grad must be >= 0 (0: no clipping), got {self.clip_grad}")


class PromptStrategy(Strategy):
    """Base: frozen ViT, prompts chosen from the frozen [CLS] query, masked CE, prompted prediction."""

    compatibility = frozenset({"class-incremental"})
    Options = PromptOptions
    #: the kind of backbone the strategy needs (:func:`cfs.models.peft.backbone_family`)
    backbone_family: ClassVar[str] = "vit"

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        self.spec: dict[str, Any] | None = None  # shapes the prompt parameters are built from
        self.prompts: nn.Module | None = None
        self.task = -1  # index of the experience trained last (or being trained)
        self._stack = contextlib.ExitStack()
        self._aux: torch.Tensor | None = None
        self._pv: tuple[nn.Module, PromptedViT] | None = None  # (the run's model, its prompted ViT)
        self._queries: torch.Tensor | None = None
        self._queries_of: Any = None

    # -- what a method defines ----------------------------------------------------------------
    def make_spec(self, pv: PromptedViT, state: RunState) -> dict[str, Any]:
        """Plain numbers the prompt parameters are built from (dimensions, pool sizes)."""
        raise NotImplementedError

    def make_prompts(self, spec: dict[str, Any], generator: torch.Generator | None) -> nn.Module:
        """The prompt parameters, freshly initialised, for ``spec``."""
        raise NotImplementedError

    def prompt_inputs(self, state: RunState, query: torch.Tensor,
                      train: bool) -> tuple[PromptInputs, torch.Tensor | None]:
        """Prompts to insert for a batch with frozen features ``query`` and an extra loss term."""
        raise NotImplementedError

    def start_experience(self, state: RunState) -> None:
        """Called before an experience is trained, after ``self.task`` is set."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # -- set-up --------------------------------------------------------------------------------
    def prompted_vit(self, state: RunState) -> PromptedViT:
        """The run's ViT with its insertion points; built prompts on the run's device. Looked up
        and moved once per model, not per batch (the hot path only reads the cached pair)."""
        if self._pv is not None and self._pv[0] is state.model and self.prompts is not None:
            return self._pv[1]
        try:
            pv = prompted(state.model.backbone)
        except ValueError:
            raise CfsError(f"strategy {self.name!r} needs a ViT backbone (a timm VisionTransformer, e.g. --backbone "
                           f"vit-tiny or timm:vit_base_patch16_224), not {type(state.model.backbone).__name__}") from None
        if self.prompts is None:
            try:
                self.spec = self.make_spec(pv, state)
            except ValueError as exc:
                raise CfsError(f"{self.name}: {exc}; change it with -o {self.name}.<option>=...") from None
            self.prompts = self.make_prompts(self.spec, state.generator)
        self.prompts.to(state.device)
        self._pv = (state.model, pv)
        return pv

    @hookimpl
    def cfs_before_run(self, state: RunState) -> None:
        self.prompted_vit(state)
        state.model.backbone.requires_grad_(False)

    @hookimpl
    def cfs_before_training_exp(self, state: RunState) -> None:
        self.prompted_vit(state)
        state.model.backbone.requires_grad_(False)
        self.task = state.experience_index
        self._queries, self._queries_of = None, None
        self.start_experience(state)

    @hookimpl
    def cfs_extra_parameters(self, state: RunState) -> list[nn.Parameter]:
        return [p for p in self.prompts.parameters() if p.requires_grad]

    # -- queries -------------------------------------------------------------------------------
    @torch.no_grad()
    def batch_queries(self, state: RunState) -> torch.Tensor:
        """Frozen features of the batch's rows: the drawn rows from the cache of the training
        images (``query=cached``), any other row (appended by another strategy) computed."""
        batch, backbone = state.batch, state.model.backbone
        if self.options.query == "augmented":
            return backbone(batch.x).float()
        data = state.train_data
        if self._queries_of is not data:
            self._queries, self._queries_of = cached_features(state, data.x), data
        q = self._queries[batch.index.to(self._queries.device)]
        if batch.size > batch.n_drawn:
            q = torch.cat([q, backbone(batch.x[batch.n_drawn:]).float()])
        return q

    # -- training ------------------------------------------------------------------------------
    @hookimpl(trylast=True)  # after every composed strategy has appended its rows to the batch
    def cfs_before_batch(self, state: RunState) -> None:
        self._stack.close()
        pv = self.prompted_vit(state)
        inputs, self._aux = self.prompt_inputs(state, self.batch_queries(state), train=True)
        self._stack.enter_context(pv.use(inputs))

    @hookimpl(tryfirst=True)  # before any composed strategy forwards the model again
    def cfs_after_forward(self, state: RunState) -> None:
        self._stack.close()

    @hookimpl
    def cfs_base_loss(self, state: RunState) -> torch.Tensor | None:
        if not self.options.train_mask:
            return None
        batch, logits = state.batch, state.outputs
        keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        keep[torch.as_tensor(list(state.experience.classes), device=logits.device)] = True
        masked = logits.masked_fill(~keep, float("-inf"))
        if batch.size > batch.n_drawn or batch.drawn_replayed is not None:  # rows of a memory: unmasked
            masked = torch.where(batch.incoming.unsqueeze(1), masked, logits)
        return F.cross_entropy(masked, batch.y)

    @hookimpl
    def cfs_loss(self, state: RunState) -> torch.Tensor | None:
        aux, self._aux = self._aux, None
        return aux

    @hookimpl
    def cfs_after_backward(self, state: RunState) -> None:
        if self.options.clip_grad > 0:
            params = [p for g in state.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.options.clip_grad)

    @hookimpl
    def cfs_before_eval(self, state: RunState) -> None:
        self._stack.close()

    # -- prediction ----------------------------------------------------------------------------
    @hookimpl
    def cfs_predict(self, state: RunState, x: torch.Tensor) -> torch.Tensor:
        pv = self.prompted_vit(state)
        query = run_cache(state).prepared(state.model.backbone, x)
        inputs, _ = self.prompt_inputs(state, query, train=False)
        with pv.use(inputs):
            return state.model(x)

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.prompts is None:
            return {"task": self.task}
        return {"task": self.task, "spec": dict(self.spec),
                "prompts": {k: v.detach().cpu().clone() for k, v in self.prompts.state_dict().items()},
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task = int(state.get("task", -1))
        if "spec" not in state:
            return
        if self.prompts is None or self.spec != state["spec"]:
            self.spec = dict(state["spec"])
            self.prompts = self.make_prompts(self.spec, None)
            self._pv = None  # new prompt parameters: move them to the run's device at next use
        device = next(self.prompts.parameters()).device
        self.prompts.load_state_dict({k: v.to(device) for k, v in state["prompts"].items()})
        self.load_extra_state(state)
