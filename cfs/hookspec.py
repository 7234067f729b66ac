"""Every cfs hook, declared once.

Hooks come in four families:

* **Registration** (``cfs_add_*``): called once when the plugin manager starts; a plugin
  *module* adds named things to a :class:`cfs.registry.Registry` (strategies, scenarios,
  scenario kinds, backbones, loggers, subcommands, distillation losses).
* **Lifecycle** (``cfs_before_*`` / ``cfs_after_*``): called at fixed points of the loops with
  the run's :class:`cfs.engine.state.RunState`; they may mutate the state (join data to
  ``state.train_data`` with ``state.join_train_data``, append replayed rows with
  ``state.batch.append_replayed``) and return nothing.
* **Collecting** (``cfs_loss``, ``cfs_extra_parameters``): every composed strategy may answer;
  the engine sums the loss terms and joins the parameter lists.
* **Replacement** (``firstresult=True``): the first non-``None`` answer replaces the engine's
  default (a training-free method replaces the training of an experience; a prototype
  classifier replaces prediction).

Composition (``--strategy a+b``) is a set, see :mod:`cfs.composition`: the composed
strategies' hooks run in alphabetical order of their names whatever order the user wrote;
two strategies answering the same replacement hook are refused before any work unless one
declares ``fallback_hooks`` or both name the same ``shared_answers`` computation. Only the
strategies of the current run are registered while it runs.

Which loop calls which hook (the optimisation step, :class:`cfs.engine.step.OptimStep`, is
shared: ``cfs_extra_parameters`` when it builds the optimizer, then per step the base loss,
``cfs_loss``, ``cfs_before_backward``, ``cfs_after_backward``):

=========================  ==========================  ================================
hook                       continual (class-inc/FSCIL)  episodic (N-way K-shot)
=========================  ==========================  ================================
cfs_before_run             once                         once
cfs_before_training_exp    per experience               --
cfs_train_experience       per experience (replaces)    --
cfs_extra_parameters       per experience               once
cfs_before_epoch           per epoch                    --
cfs_before_batch           per batch                    --
cfs_training_step          per batch (replaces step)    --
cfs_after_forward          per batch                    --
cfs_base_loss              per batch (replaces CE)      -- (the base is cfs_meta_loss)
cfs_meta_loss              --                           per meta-batch (the base loss)
cfs_loss                   per batch                    per meta-batch
cfs_before_backward        per batch                    per meta-batch
cfs_after_backward         per batch                    per meta-batch
cfs_after_batch            per batch                    per meta-batch
cfs_after_epoch            per epoch                    --
cfs_after_training_exp     per experience               --
cfs_before_eval            per evaluation               --
cfs_predict                per evaluation batch         --
cfs_predict_episode        --                           per validation/test chunk
cfs_after_eval             per evaluation               --
cfs_after_run              once                         once
=========================  ==========================  ================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from cfs.engine.closed_form import ClosedFormLoss
    from cfs.engine.state import RunState
    from cfs.registry import Registry

hookspec = pluggy.HookspecMarker("cfs")


# --------------------------------------------------------------------------- registration


@hookspec
def cfs_add_strategies(registry: "Registry") -> None:
    """Register strategy classes: ``registry.add(MyStrategy)``.

    Called once at start-up. A strategy class has a unique ``name`` (the ``--strategy`` value)
    and a ``compatibility`` set (``"class-incremental"``, ``"fscil"``, ``"episodic"``); see
    :class:`cfs.strategy.Strategy`.
    """


@hookspec
def cfs_add_scenarios(registry: "Registry") -> None:
    """Register scenario factories (``--scenario`` names); see :mod:`cfs.scenarios`."""


@hookspec
def cfs_add_backbones(registry: "Registry") -> None:
    """Register backbone factories (``--backbone`` names); see :mod:`cfs.models.backbones`."""


@hookspec
def cfs_add_scenario_kinds(registry: "Registry") -> None:
    """Register scenario kinds (:class:`cfs.kinds.ScenarioKind`: the loop that drives a
    scenario of that kind, its metrics writer, console table and report section). A new
    setting (online, task-incremental) is a new kind registered here, not a branch in the core."""


@hookspec
def cfs_add_loggers(registry: "Registry") -> None:
    """Register result loggers (``--logger NAME``)."""


@hookspec
def cfs_add_commands(registry: "Registry") -> None:
    """Register ``cfs`` subcommands (an object with ``name``, ``add_parser(subparsers, parent)``
    and ``run(args) -> int``)."""


@hookspec
def cfs_add_distill_losses(registry: "Registry") -> None:
    """Register teacher-student distillation losses by name (used by ``cfs distill --loss`` and
    by the distillation strategies alike)."""


# --------------------------------------------------------------------------- run level


@hookspec
def cfs_before_run(state: "RunState") -> None:
    """After the model, stream and strategies exist, before the first experience."""


@hookspec
def cfs_after_run(state: "RunState") -> None:
    """After the last experience has been trained and evaluated."""


# --------------------------------------------------------------------------- experience level


@hookspec
def cfs_before_training_exp(state: "RunState") -> None:
    """Before an experience is trained: ``state.experience`` is set, the head has already grown
    to cover its classes and ``state.train_data`` holds its training data (a strategy may
    replace it, as ``joint`` does). The optimizer is built after this hook."""


@hookspec(firstresult=True)
def cfs_train_experience(state: "RunState") -> Any:
    """Replace the whole training of one experience (epochs and batches).

    Return anything but ``None`` to skip the engine's epoch loop, as training-free methods do.
    """


@hookspec
def cfs_after_training_exp(state: "RunState") -> None:
    """After the epochs of an experience, before it is evaluated (update memories, take
    snapshots of the model, compute prototypes)."""


# --------------------------------------------------------------------------- epoch / batch


@hookspec
def cfs_before_epoch(state: "RunState") -> None:
    """At the start of every training epoch (``state.epoch`` is 0-based)."""


@hookspec
def cfs_after_epoch(state: "RunState") -> None:
    """At the end of every training epoch, after the LR scheduler has stepped."""


@hookspec
def cfs_before_batch(state: "RunState") -> None:
    """``state.batch`` (:class:`cfs.engine.batch.Batch`) holds the drawn rows, augmented and
    normalised, on the run's device, with their provenance (``batch.incoming``,
    ``batch.replayed``, ``batch.index``). A strategy appends replayed samples with
    ``state.batch.append_replayed(x, y, source=self.name, **targets)``; never reassign it."""


@hookspec(firstresult=True)
def cfs_training_step(state: "RunState") -> Any:
    """Replace forward, loss, backward and optimizer step for one batch.

    Return the loss (a tensor or float) to skip the engine's own step. Set ``state.outputs``
    to the logits of every row of ``state.batch`` for the epoch's training accuracy to count
    this batch (otherwise the epoch's accuracy is ``nan``: nothing was measured).
    """


@hookspec
def cfs_after_forward(state: "RunState") -> None:
    """``state.outputs`` holds the logits of ``state.batch``; ``state.features`` holds the
    backbone features of the same batch."""


@hookspec(firstresult=True)
def cfs_base_loss(state: "RunState") -> "torch.Tensor | None":
    """Replace the base loss (cross-entropy over all seen classes by default)."""


@hookspec
def cfs_loss(state: "RunState") -> "torch.Tensor | ClosedFormLoss | None":
    """Return an extra loss term to add to the base loss, or ``None``. All answers are summed
    (in the continual loop after ``cfs_after_forward``; in the episodic loop after
    ``cfs_meta_loss``). A term whose gradient is known in closed form may be a
    :class:`cfs.engine.closed_form.ClosedFormLoss`: its value joins the logged loss and its
    gradient is added to ``.grad`` right after ``backward``, before anything else sees the
    gradients (a deferred or accumulating one is computed there)."""


@hookspec
def cfs_before_backward(state: "RunState") -> None:
    """``state.loss`` is the loss about to be back-propagated (every term but the closed-form
    ones, whose values join it after ``backward``)."""


@hookspec
def cfs_after_backward(state: "RunState") -> None:
    """Gradients exist; the optimizer has not stepped yet (clip or project gradients here).
    ``state.loss`` is now the detached total loss, closed-form terms' values included."""


@hookspec
def cfs_after_batch(state: "RunState") -> None:
    """After the optimizer step of a batch (reservoir updates, EMA, counters)."""


@hookspec
def cfs_extra_parameters(state: "RunState") -> "list[torch.nn.Parameter] | None":
    """Return parameters outside the model that the optimizer must train (projectors, heads of
    a regularizer). Called when the optimizer of an experience is built; answers are joined."""


# --------------------------------------------------------------------------- evaluation


@hookspec
def cfs_before_eval(state: "RunState") -> None:
    """Before the test stream is evaluated (after training an experience, or before any
    training for the initial row used by forward transfer)."""


@hookspec(firstresult=True)
def cfs_predict(state: "RunState", x: "torch.Tensor") -> "torch.Tensor | None":
    """Replace prediction: return class scores (B, n_seen) for the normalised batch ``x``, for
    example negative distances to class means. ``None`` keeps the model's logits."""


@hookspec
def cfs_after_eval(state: "RunState") -> None:
    """After the test stream is evaluated; ``state.results`` holds the accuracy matrix so far."""


# --------------------------------------------------------------------------- episodic (few-shot)


@hookspec(firstresult=True)
def cfs_meta_loss(state: "RunState", tasks: "Any") -> "torch.Tensor | None":
    """Return the differentiable meta-training loss of a meta-batch ``tasks``
    (:class:`cfs.scenarios.episodes.EpisodeBatch`), averaged over its tasks. The episodic
    loop back-propagates it and steps the meta-optimizer (which trains the model's parameters
    and any ``cfs_extra_parameters``)."""


@hookspec(firstresult=True)
def cfs_predict_episode(state: "RunState", tasks: "Any") -> "torch.Tensor | None":
    """Return query scores (T, N*Q, N) for the tasks of ``tasks`` (support-set adaptation,
    prototypes or transductive label propagation happen here). Called under
    ``torch.enable_grad()`` so methods that adapt at test time can differentiate."""
