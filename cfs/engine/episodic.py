"""The episodic (few-shot) loop: meta-train on episodes, validate periodically, meta-test.

The loop owns the data path and the optimisation; a strategy owns the method through two
hooks of :mod:`cfs.hookspec`: ``cfs_meta_loss(state, tasks)`` returns the differentiable loss
of a meta-batch (the loop back-propagates it and steps the meta-optimizer over the model's
parameters and any ``cfs_extra_parameters``), and ``cfs_predict_episode(state, tasks)``
returns query scores (T, N*Q, N). Validation and test episodes are fixed by the run seed (see
:mod:`cfs.scenarios.episodic`), so methods are compared on the same episodes; the weights with
the best validation accuracy are restored before meta-testing (``select_best``).

In a distributed run (:mod:`cfs.engine.distributed`) every rank draws the same meta-batch and
trains on its share of the tasks (``meta_batch / N`` each, still vectorised by the strategy);
the shared step averages the gradients. Validation and test episodes are split across ranks
and their accuracies gathered, so every rank selects the same best weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from cfs.engine import distributed
from cfs.engine.continual import Timings
from cfs.engine.hooks import ActiveHooks
from cfs.engine.progress import Progress
from cfs.engine.resume import episodic_payload, restore_episodic
from cfs.engine.state import RunState
from cfs.engine.step import OptimStep
from cfs.errors import CfsError
from cfs.scenarios.episodes import EpisodeBatch
from cfs.scenarios.episodic import EpisodeSampler


@dataclass
class EpisodicResults:
    """What an episodic run measured; kept in ``state.extra["episodic"]`` for the writer."""

    test_accuracies: list[float] = field(default_factory=list)
    #: (meta-iteration, mean validation accuracy) after every validation
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    #: (meta-iteration, mean meta-loss since the previous entry, seconds since the start)
    train_log: list[tuple[int, float, float]] = field(default_factory=list)
    best_iteration: int | None = None
    n_way: int = 0
    k_shot: int = 0
    q_query: int = 0


class EpisodicLoop:
    """Runs a :class:`RunState` whose scenario has kind ``episodic``."""

    def __init__(self, state: RunState, progress: bool = True) -> None:
        setup = state.scenario.episodic
        if setup is None:
            raise CfsError(f"scenario {state.scenario.name!r} has no episodic setup")
        self.state, self.hooks, self.progress = state, ActiveHooks(state.hooks), progress
        self.step = OptimStep(state, self.hooks)
        self.bars = Progress(progress)
        self.setup = setup
        self.timings = Timings()
        pool = setup.data.to(state.device)
        self.samplers = dict(setup.sources)  # external episode sources (cfs.data.l2l_adapter) win
        if "train" not in self.samplers:
            self.samplers["train"] = EpisodeSampler(pool, setup.classes["train"], setup.train_shape)
        for split in ("val", "test"):
            if split not in self.samplers and len(setup.classes.get(split) or []) >= setup.eval_shape.n_way:
                self.samplers[split] = EpisodeSampler(pool, setup.classes[split], setup.eval_shape)
        if "test" not in self.samplers:
            raise CfsError(f"{setup.eval_shape.n_way}-way test episodes need at least that many test classes")
        shape = setup.eval_shape
        self.results = EpisodicResults(n_way=shape.n_way, k_shot=shape.k_shot, q_query=shape.q_query)
        state.extra["episodic"] = self.results

    # ----------------------------------------------------------------------------- run
    def run(self) -> RunState:
        s, h, cfg = self.state, self.hooks, self.state.config
        head = s.model.head
        n_out = max(self.setup.train_shape.n_way, self.setup.eval_shape.n_way)
        if hasattr(head, "expand") and head.out_features < n_out:
            head.expand(n_out - head.out_features)  # N-way head for methods that adapt one (MAML)
        s.n_seen = n_out
        h.cfs_before_run(state=s)
        self.step.build(cfg.meta_iterations)
        extra = self.step.extra
        t0 = time.perf_counter()
        best = self._meta_train(extra)
        if best is not None and cfg.select_best:
            self._restore(best, extra)
        self.timings.train_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        accs = self.evaluate("test", cfg.test_episodes)
        self.timings.eval_seconds.append(time.perf_counter() - t0)
        self.results.test_accuracies = accs.tolist()
        h.cfs_after_run(state=s)
        return s

    def _meta_train(self, extra: list[torch.nn.Parameter]) -> dict | None:
        """Meta-train; with ``state.resume``, from the checkpointed meta-iteration on.
        ``state.checkpointer`` writes a checkpoint after every validation and by time."""
        s, h, cfg = self.state, self.hooks, self.state.config
        sampler = self.samplers["train"]
        best_acc, best = -1.0, None
        loss_sum, n_loss, t0 = torch.zeros((), device=s.device), 0, time.perf_counter()
        first = 0
        if s.resume is not None:
            first, best, acc = restore_episodic(self, s.resume)
            best_acc, loss_sum, n_loss = acc["best_acc"], acc["loss_sum"].to(s.device), acc["n_loss"]
            t0 -= acc["seconds"]
        log_every = max(1, min(cfg.val_interval, 100))
        for it in self.bars.bar(range(first, cfg.meta_iterations), desc="meta-iterations", unit="it"):
            s.iteration = it
            s.model.train()
            support, query = sampler.sample_indices(cfg.meta_batch, s.generator)  # the same on every rank
            lo, hi = distributed.split_range(cfg.meta_batch)  # equal shares (checked before the run)
            with s.sharded():
                tasks = sampler.batch(support[lo:hi], query[lo:hi], s.transform, s.device, train=True,
                                      generator=s.augmentation_generator)
            loss = self.step(lambda: self._meta_loss(tasks))
            if s.scheduler is not None:
                s.scheduler.step()
            h.cfs_after_batch(state=s)
            loss_sum += loss.detach()
            n_loss += 1
            done = it + 1
            if done % log_every == 0 or done == cfg.meta_iterations:
                self.step.check_losses()
                mean = float(distributed.all_reduce_sum(loss_sum)) / (n_loss * distributed.world_size())
                self.results.train_log.append((done, mean, time.perf_counter() - t0))
                loss_sum, n_loss = torch.zeros((), device=s.device), 0
            validate = "val" in self.samplers and (done % cfg.val_interval == 0 or done == cfg.meta_iterations)
            if validate:
                acc = float(self.evaluate("val", cfg.val_episodes).mean())
                self.results.val_curve.append((done, acc))
                if acc > best_acc:
                    best_acc, self.results.best_iteration = acc, done
                    best = self._snapshot(extra)
            ckpt = s.checkpointer
            if ckpt is not None and done < cfg.meta_iterations and (
                    (validate and ckpt.due_at_boundary()) or ckpt.due_by_time()):
                sums = {"best_acc": best_acc, "loss_sum": loss_sum.detach().cpu(), "n_loss": n_loss,
                        "seconds": time.perf_counter() - t0}
                ckpt.write(episodic_payload(self, done, best, sums))
        return best

    def _meta_loss(self, tasks: EpisodeBatch) -> torch.Tensor:
        """The base loss of a meta-batch: the strategy's ``cfs_meta_loss``."""
        s = self.state
        loss = self.hooks.cfs_meta_loss(state=s, tasks=tasks)
        if loss is None:
            names = ", ".join(st.name for st in s.strategies)
            raise CfsError(f"strategy {names} implements no cfs_meta_loss, so it cannot meta-train")
        return loss

    def _snapshot(self, extra: list[torch.nn.Parameter]) -> dict:
        return {"model": {k: v.detach().clone() for k, v in self.state.model.state_dict().items()},
                "extra": [p.detach().clone() for p in extra]}

    def _restore(self, snap: dict, extra: list[torch.nn.Parameter]) -> None:
        self.state.model.load_state_dict(snap["model"])
        with torch.no_grad():
            for p, v in zip(extra, snap["extra"]):
                p.copy_(v)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, split: str, n_episodes: int) -> torch.Tensor:
        """Accuracy of each of the ``n_episodes`` fixed episodes of ``split`` (CPU tensor); in a
        distributed run each rank meta-tests its part of the episodes and the accuracies are
        gathered in order."""
        s = self.state
        sampler = self.samplers[split]
        support, query = sampler.fixed_indices(n_episodes, s.config.seed, split)
        lo, hi = distributed.split_range(n_episodes)
        support, query = support[lo:hi], query[lo:hi]
        chunk = max(1, s.config.meta_batch)
        distributed.sync_buffers(s.model)
        s.model.eval()
        accs = []
        for start in self.bars.bar(range(0, hi - lo, chunk), desc=f"{split} episodes", unit="chunk"):
            tasks = sampler.batch(support[start : start + chunk], query[start : start + chunk], s.transform, s.device)
            accs.append(self.episode_accuracy(tasks))
        s.model.train()
        mine = torch.cat(accs) if accs else torch.zeros(0, device=s.device)
        return distributed.gather_rows(mine, n_episodes).cpu()

    def episode_accuracy(self, tasks: EpisodeBatch) -> torch.Tensor:
        """Per-task query accuracy from the strategy's ``cfs_predict_episode`` scores."""
        s, h = self.state, self.hooks
        with torch.enable_grad():
            scores = h.cfs_predict_episode(state=s, tasks=tasks)
        if scores is None:
            names = ", ".join(st.name for st in s.strategies)
            raise CfsError(f"strategy {names} implements no cfs_predict_episode, so it cannot be meta-tested")
        expected = (tasks.n_tasks, tasks.query_y.shape[1], tasks.n_way)
        if tuple(scores.shape) != expected:
            raise RuntimeError(f"cfs_predict_episode returned scores of shape {tuple(scores.shape)}, expected {expected}")
        return (scores.detach().argmax(-1) == tasks.query_y).float().mean(1)
