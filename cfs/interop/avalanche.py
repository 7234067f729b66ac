"""Avalanche in, cfs out: Avalanche benchmarks as cfs scenarios, Avalanche metrics on cfs runs.

``avalanche-lib`` is an optional extra (``pip install 'cfs[avalanche]'``); this module imports
it only where an Avalanche object is handled, and nothing else in cfs imports this module.

* :func:`scenario_from_avalanche` materialises a class-incremental Avalanche benchmark (for
  example from ``nc_benchmark`` or ``avalanche.benchmarks.classic``) into a
  :class:`cfs.scenarios.Scenario`. Each sample is read once through the dataset's *eval*
  transforms (Avalanche's random training augmentations are not replayed; add cfs
  augmentation instead), and labels are renumbered in order of appearance (cfs's convention:
  label ``k`` is the ``k``-th class of the stream; ``scenario.class_order[k]`` is the original
  Avalanche class id).
* :class:`AvalancheMetrics` is a cfs plugin that drives Avalanche ``PluginMetric`` objects from
  cfs hooks, through a view that exposes what they read (``mb_x``, ``mb_y``, ``mb_output``,
  ``loss``, ``experience``, ``clock``, ``is_training``/``is_eval``, ``model`` ...).
* :func:`run_on_avalanche` runs a cfs strategy on an Avalanche benchmark from Python.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from cfs import hookimpl
from cfs.data.arrays import ArrayDataset
from cfs.data.transforms import BatchTransform
from cfs.errors import CfsError
from cfs.scenarios.base import Experience, Scenario


def require_avalanche() -> Any:
    """Import avalanche or raise the one-line fix."""
    try:
        import avalanche
    except ImportError:
        raise CfsError("this needs avalanche-lib: pip install 'cfs[avalanche]' (avalanche-lib==0.6.0)") from None
    return avalanche


# ----------------------------------------------------------------------------- benchmarks


def _materialise(dataset: Any, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """All (x, y) of an Avalanche dataset as two tensors, through its eval transforms."""
    if hasattr(dataset, "eval"):
        dataset = dataset.eval()
    xs, ys = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]).long())
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """cfs batches are (N, C, H, W): vectors become (N, D, 1, 1), (N, H, W) gets one channel."""
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() == 3:
        return x[:, None]
    if x.dim() != 4:
        raise CfsError(f"Avalanche samples of shape {tuple(x.shape[1:])} are not images or vectors")
    return x


def _task_labels(exp: Any) -> list[int]:
    return [int(t) for t in (getattr(exp, "task_labels", None) or [0])]


def scenario_from_avalanche(benchmark: Any, name: str = "avalanche", batch_size: int = 512) -> Scenario:
    """A cfs class-incremental scenario with the experiences of ``benchmark``'s train and test
    streams (same order, same classes per experience)."""
    require_avalanche()
    train_stream = list(getattr(benchmark, "train_stream", []))
    test_stream = list(getattr(benchmark, "test_stream", []))
    if not train_stream or len(train_stream) != len(test_stream):
        raise CfsError("the Avalanche benchmark needs a train_stream and a test_stream of the same length")
    order: list[int] = []
    raw = []
    for i, (tr, te) in enumerate(zip(train_stream, test_stream)):
        if any(t != 0 for t in _task_labels(tr) + _task_labels(te)):
            raise CfsError("task-incremental Avalanche benchmarks (task labels > 0) are not supported: "
                           "build it with task_labels=False")
        xtr, ytr = _materialise(tr.dataset, batch_size)
        xte, yte = _materialise(te.dataset, batch_size)
        classes = [int(c) for c in getattr(tr, "classes_in_this_experience", None) or sorted(set(ytr.tolist()))]
        if set(yte.tolist()) - set(classes):
            raise CfsError(f"test experience {i} holds classes that train experience {i} does not introduce")
        if set(classes) & set(order):
            raise CfsError(f"experience {i} repeats classes of earlier experiences: not a class-incremental benchmark")
        order += sorted(classes)
        raw.append((len(classes), xtr, ytr, xte, yte))
    lut = torch.full((max(order) + 1,), -1, dtype=torch.long)
    lut[torch.tensor(order)] = torch.arange(len(order))
    names = [str(c) for c in order]
    experiences, start = [], 0
    for i, (k, xtr, ytr, xte, yte) in enumerate(raw):
        classes = list(range(start, start + k))
        start += k
        experiences.append(Experience(i, classes, ArrayDataset(_as_images(xtr).float(), lut[ytr], names),
                                      ArrayDataset(_as_images(xte).float(), lut[yte], names)))
    shape = tuple(experiences[0].train.x.shape[1:])
    channels = shape[0]
    return Scenario(name=name, kind="class-incremental", experiences=experiences, class_order=order,
                    class_names=names, transform=BatchTransform(mean=(0.0,) * channels, std=(1.0,) * channels),
                    input_shape=shape, description=f"converted from Avalanche {type(benchmark).__name__}")


# ----------------------------------------------------------------------------- metrics


@dataclass
class Clock:
    """The counters of Avalanche's ``Clock`` plugin, advanced after the metrics ran (Avalanche
    appends its clock after the evaluator)."""

    train_iterations: int = 0
    train_exp_counter: int = 0
    train_exp_epochs: int = 0
    train_exp_iterations: int = 0
    train_epoch_iterations: int = 0
    total_iterations: int = 0


@dataclass
class StrategyView:
    """What an Avalanche ``PluginMetric`` reads from its ``strategy`` argument."""

    model: torch.nn.Module
    device: torch.device
    train_epochs: int
    eval_mb_size: int
    train_mb_size: int
    clock: Clock = field(default_factory=Clock)
    experience: Any = None
    is_training: bool = False
    mb_x: torch.Tensor | None = None
    mb_y: torch.Tensor | None = None
    mb_output: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    eval_every: int = 0  # cfs evaluates after each experience (forward transfer checks > -1)

    @property
    def is_eval(self) -> bool:
        return not self.is_training

    @property
    def mb_task_id(self) -> torch.Tensor:
        return torch.zeros(0 if self.mb_y is None else len(self.mb_y), dtype=torch.long)

    @property
    def mb_task_labels(self) -> torch.Tensor:
        return self.mb_task_id


def experience_view(index: int, stream: str, classes: Sequence[int], data: ArrayDataset | None = None) -> Any:
    """An Avalanche-like experience: ``current_experience``, ``origin_stream.name``,
    ``task_labels``, ``classes_in_this_experience`` (cfs labels)."""
    return SimpleNamespace(current_experience=index, origin_stream=SimpleNamespace(name=stream), task_label=0,
                           task_labels=[0], classes_in_this_experience=list(classes), dataset=data)


class AvalancheMetrics:
    """A cfs plugin that forwards cfs hooks to Avalanche ``PluginMetric`` callbacks.

    Register it with the run's plugin manager (:func:`attach_metrics` does) and read the
    values afterwards: ``values[name]`` lists ``(x, value)`` in emission order (``x`` is
    Avalanche's ``clock.train_iterations``), ``last[name]`` the latest value.

    Mapping: an experience's training is ``before_training``/``before_training_exp`` ...
    ``after_training_exp``/``after_training``; epochs and iterations map one to one
    (``after_training_iteration`` runs after the optimizer step, with ``mb_output`` the
    batch's logits, ``mb_y`` its labels and ``loss`` the total loss). Each evaluation of the
    engine is replayed as ``strategy.eval(test_stream)``: every experience's test data in
    ``eval_mb_size`` batches, scored exactly as the engine scores them (``state.scores``
    restricted to the classes seen so far; the loss of a not-yet-learnt class uses the engine's
    convention). Not forwarded: the engine's evaluation before any training (no class can be
    predicted yet; cfs computes forward transfer itself) and strategies that replace the whole
    training of an experience (``cfs_train_experience``) emit no training iterations.
    """

    def __init__(self, metrics: Iterable[Any]) -> None:
        self.metrics = list(metrics)
        self.values: dict[str, list[tuple[int, Any]]] = {}
        self.last: dict[str, Any] = {}
        self.view: StrategyView | None = None

    # ------------------------------------------------------------------ plumbing
    def _emit(self, *callbacks: str) -> None:
        for cb in callbacks:
            for metric in self.metrics:
                result = getattr(metric, cb)(self.view)
                for mv in result or []:
                    self.values.setdefault(mv.name, []).append((mv.x_plot, mv.value))
                    self.last[mv.name] = mv.value

    def _train_batch(self, state: Any) -> None:
        v = self.view
        v.mb_x, v.mb_y = state.batch
        v.mb_output, v.loss = state.outputs, state.loss

    @hookimpl
    def cfs_before_run(self, state: Any) -> None:
        self.view = StrategyView(model=state.model, device=state.device, train_epochs=state.config.epochs,
                                 eval_mb_size=state.config.eval_batch_size, train_mb_size=state.config.batch_size)

    # ------------------------------------------------------------------ training
    @hookimpl
    def cfs_before_training_exp(self, state: Any) -> None:
        v = self.view
        v.is_training = True
        exp = state.experience
        v.experience = experience_view(exp.index, "train", exp.classes, exp.train)
        v.clock.train_exp_iterations = v.clock.train_exp_epochs = 0
        self._emit("before_training", "before_training_exp", "before_train_dataset_adaptation",
                   "after_train_dataset_adaptation")

    @hookimpl
    def cfs_before_epoch(self, state: Any) -> None:
        self.view.clock.train_epoch_iterations = 0
        self._emit("before_training_epoch")

    @hookimpl
    def cfs_before_batch(self, state: Any) -> None:
        self.view.mb_x, self.view.mb_y = state.batch
        self._emit("before_training_iteration", "before_forward")

    @hookimpl
    def cfs_after_forward(self, state: Any) -> None:
        self._train_batch(state)
        self._emit("after_forward")

    @hookimpl
    def cfs_before_backward(self, state: Any) -> None:
        self._train_batch(state)
        self._emit("before_backward")

    @hookimpl
    def cfs_after_backward(self, state: Any) -> None:
        self._emit("after_backward", "before_update")

    @hookimpl
    def cfs_after_batch(self, state: Any) -> None:
        if state.outputs is None:  # a replaced training step that exposes no logits
            return
        self._train_batch(state)
        self._emit("after_update", "after_training_iteration")
        c = self.view.clock
        c.train_epoch_iterations += 1
        c.train_exp_iterations += 1
        c.train_iterations += 1
        c.total_iterations += 1

    @hookimpl
    def cfs_after_epoch(self, state: Any) -> None:
        self._emit("after_training_epoch")
        self.view.clock.train_exp_epochs += 1

    @hookimpl
    def cfs_after_training_exp(self, state: Any) -> None:
        self._emit("after_training_exp")
        self.view.clock.train_exp_counter += 1
        self._emit("after_training")
        self.view.is_training = False

    # ------------------------------------------------------------------ evaluation
    @hookimpl
    def cfs_after_eval(self, state: Any) -> None:
        v = self.view
        was_training = state.model.training
        state.model.eval()
        v.is_training = False
        self._emit("before_eval")
        with torch.no_grad():
            for exp in state.scenario.experiences:
                v.experience = experience_view(exp.index, "test", exp.classes, exp.test)
                self._emit("before_eval_exp", "before_eval_dataset_adaptation", "after_eval_dataset_adaptation")
                data = exp.test
                for start in range(0, len(data), v.eval_mb_size):
                    x = state.prepare(data.x[start : start + v.eval_mb_size])
                    y = data.y[start : start + v.eval_mb_size].to(state.device)
                    v.mb_x, v.mb_y = x, y
                    self._emit("before_eval_iteration", "before_eval_forward")
                    v.mb_output = state.scores(x)[:, : state.n_seen].float()
                    v.loss = F.cross_entropy(v.mb_output, y.clamp(max=state.n_seen - 1))
                    self._emit("after_eval_forward", "after_eval_iteration")
                    v.clock.total_iterations += 1
                self._emit("after_eval_exp")
        self._emit("after_eval")
        state.model.train(was_training)


@contextmanager
def attach_metrics(pm: Any, metrics: Iterable[Any]) -> Iterator[AvalancheMetrics]:
    """Register an :class:`AvalancheMetrics` plugin for the runs inside the ``with`` block."""
    plugin = AvalancheMetrics(metrics)
    name = f"avalanche-metrics-{id(plugin)}"
    pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        pm.unregister(name=name)


def run_on_avalanche(benchmark: Any, strategy: str = "finetune", config: Any = None,
                     metrics: Iterable[Any] = (), plugins: Sequence[str] = (), out: Any = None,
                     progress: bool = False) -> tuple[Any, AvalancheMetrics]:
    """Run the cfs strategy ``strategy`` (``"a+b"`` composes) on an Avalanche benchmark.

    ``config`` is a :class:`cfs.config.RunConfig` or a dict of its keys; ``metrics`` are
    Avalanche ``PluginMetric`` objects to attach; ``out`` writes the usual results folder.
    Returns the :class:`cfs.engine.runner.RunResult` and the attached metrics' plugin.
    """
    from cfs.config import RunConfig, resolve
    from cfs.engine.runner import run_strategy
    from cfs.plugins import get_plugin_manager

    scenario = scenario_from_avalanche(benchmark)
    cfg = config if isinstance(config, RunConfig) else resolve(dict(config or {}), {"strategies": [strategy]})
    pm = get_plugin_manager(plugins)
    with attach_metrics(pm, metrics) as shim:
        result = run_strategy(pm, cfg, strategy, scenario, progress=progress)
    if out is not None:
        from cfs.evaluation.writer import write_run

        write_run(result, out, {name: info.distribution for name, info in pm.info.items()})
    return result, shim
