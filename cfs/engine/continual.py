"""The continual loop: for each experience, grow the head, train, evaluate the whole stream.

Every step calls a hook of :mod:`cfs.hookspec`; the defaults here are plain fine-tuning with
cross-entropy over all seen classes. Data live on the run's device; a batch is an index slice
of the experience's tensors, augmented and normalised on the device.

No step reads a number back from the device: per-batch statistics stay device tensors until
the end of the experience (:mod:`cfs.engine.epoch_log`). In a distributed run
(:mod:`cfs.engine.distributed`) each rank trains on its share of every epoch's permutation and
of every global batch, and evaluates its share of the test data; the statistics and accuracies
are reduced over ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cfs.engine import distributed
from cfs.engine.batch import Batch
from cfs.engine.resume import continual_payload, restore_continual, restore_optimisation
from cfs.engine.devices import amp_dtype, autocast
from cfs.engine.epoch_log import EpochLog, EpochTally, epoch_logs
from cfs.engine.hooks import ActiveHooks
from cfs.engine.progress import Progress
from cfs.engine.state import RunState
from cfs.engine.step import OptimStep, check_parameters
from cfs.scenarios.base import Experience


#: reduce the epoch tallies early once they hold this many predicted rows (bounded memory)
TALLY_ROWS = 1 << 20


def ensure_train_mode(model: torch.nn.Module) -> None:
    """``model.train()`` unless every module is in training mode already (then it would change
    nothing): a recursive ``train()`` per epoch costs as much as a few steps of a small model."""
    if not all(m.training for m in model.modules()):
        model.train()


@dataclass
class Timings:
    train_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    epochs: list[EpochLog] = field(default_factory=list)


class ContinualLoop:
    """Runs a :class:`RunState` through its scenario's experiences."""

    def __init__(self, state: RunState, progress: bool = True) -> None:
        self.state = state
        self.hooks = ActiveHooks(state.hooks)
        self.timings = Timings()
        self.progress = progress
        self.bars = Progress(progress)
        self.step = OptimStep(state, self.hooks)
        self._tallies: list[EpochTally] = []  # epochs trained but not in timings.epochs yet
        self._tally_rows = 0
        self._test = self._stack_test(state.scenario.experiences)

    def _stack_test(self, experiences: list[Experience]):
        """All test data in one tensor pair plus the experience id of every sample."""
        x = torch.cat([e.test.x for e in experiences]).to(self.state.device)
        y = torch.cat([e.test.y for e in experiences]).to(self.state.device)
        owner = torch.cat([torch.full((len(e.test),), e.index, dtype=torch.long) for e in experiences])
        self.state.results.test_sizes = [len(e.test) for e in experiences]
        return x, y, owner.to(self.state.device)

    # ----------------------------------------------------------------------------- run
    def run(self) -> RunState:
        """Every experience in turn; with ``state.resume`` (a checkpoint), from where it left
        off. ``state.checkpointer`` writes a checkpoint after every experience's evaluation and
        when its policy says so after an epoch."""
        s, h = self.state, self.hooks
        h.cfs_before_run(state=s)
        start, mid_epoch = 0, None
        if s.resume is not None:
            start, mid_epoch = restore_continual(self, s.resume)
        else:
            s.results.initial, s.results.initial_losses = self.evaluate(record=False)
        exps = s.scenario.experiences
        for exp in self.bars.bar(exps[start:], desc="experiences", unit="exp"):
            t0 = time.perf_counter()
            self.train_experience(exp, resume_epoch=mid_epoch if exp.index == start else None)
            self.timings.train_seconds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            acc, _ = self.evaluate(record=True)
            self.timings.eval_seconds.append(time.perf_counter() - t0)
            seen = [a for a, e in zip(acc, exps) if e.index <= exp.index]
            sizes = s.results.test_sizes[: len(seen)]
            mean = sum(a * n for a, n in zip(seen, sizes)) / max(sum(sizes), 1)
            self.bars.note(f"experience {exp.index}: accuracy on the classes seen so far {100 * mean:.1f}%, "
                           f"train {self.timings.train_seconds[-1]:.1f}s, eval {self.timings.eval_seconds[-1]:.1f}s")
            if s.checkpointer is not None and exp.index + 1 < len(exps) and s.checkpointer.due_at_boundary():
                s.checkpointer.write(continual_payload(self, exp.index + 1, None))
        h.cfs_after_run(state=s)
        return s

    # ----------------------------------------------------------------------------- training
    def train_experience(self, exp: Experience, resume_epoch: int | None = None) -> None:
        """Grow the head, let strategies prepare, train, let them finish. ``resume_epoch``:
        continue a checkpointed experience at that epoch (its preparation is restored, not
        repeated)."""
        s, h = self.state, self.hooks
        s.experience = exp
        s.n_seen = max(s.n_seen, max(exp.classes) + 1)
        head = s.model.head
        if hasattr(head, "expand") and head.out_features < s.n_seen:
            head.expand(s.n_seen - head.out_features)
        if resume_epoch is not None:
            self._epochs(resume_epoch)
        else:
            s.train_data = exp.train.to(s.device)
            s.n_incoming_rows = len(s.train_data)
            h.cfs_before_training_exp(state=s)
            if h.cfs_train_experience(state=s) is None:
                self._epochs(0)
        h.cfs_after_training_exp(state=s)

    def _epochs(self, start: int) -> None:
        s, h, cfg = self.state, self.hooks, self.state.config
        self.step.build(cfg.epochs)
        if start:
            restore_optimisation(self, s.resume)
        for epoch in self.bars.bar(range(start, cfg.epochs), desc=f"exp {s.experience_index} epochs", unit="epoch"):
            s.epoch = epoch
            t0 = time.perf_counter()
            h.cfs_before_epoch(state=s)
            tally = self._one_epoch()
            self.step.check_losses()
            distributed.sync_buffers(s.model)
            if s.scheduler is not None:
                s.scheduler.step()
            h.cfs_after_epoch(state=s)
            tally.experience, tally.epoch, tally.seconds = s.experience_index, epoch, time.perf_counter() - t0
            self._tallies.append(tally)
            self._tally_rows += tally.rows
            if self._tally_rows > TALLY_ROWS:
                self.flush_epoch_logs()
            done = epoch + 1
            if s.checkpointer is not None and done < cfg.epochs and s.checkpointer.due(done):
                self.flush_epoch_logs()
                check_parameters(s, self.step.params)  # never checkpoint diverged weights
                s.checkpointer.write(continual_payload(self, s.experience_index, done))
        self.flush_epoch_logs()
        # Once per experience: a weight that went non-finite earlier makes the next step's loss
        # non-finite, which the per-epoch loss check names; this catches the last steps'.
        check_parameters(s, self.step.params)

    def flush_epoch_logs(self) -> None:
        """Reduce the epochs not logged yet into ``timings.epochs`` (:mod:`cfs.engine.epoch_log`)."""
        self.timings.epochs.extend(epoch_logs(self._tallies, self.state.device))
        self._tallies, self._tally_rows = [], 0

    def _one_epoch(self) -> EpochTally:
        """Train one epoch; return its batches' losses and row counts, and the predicted class and
        target of every row its training accuracy counts (the incoming rows: replayed rows are
        not this experience's training accuracy). Nothing is reduced here, which keeps the step
        cheap and free of device synchronisation (:func:`cfs.engine.epoch_log.epoch_logs`)."""
        s, h = self.state, self.hooks
        bs = distributed.local_share(s.config.batch_size)
        data = s.train_data
        n = len(data)
        joined = n > s.n_incoming_rows  # rows from a memory follow the experience's own
        order = distributed.shard(self.batch_order(n))
        m = len(order)
        ensure_train_mode(s.model)
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        predictions: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        marked = False  # whether some targets are -1 (replayed rows, not counted)
        bar = self.bars.batches(m, f"exp {s.experience_index} epoch {s.epoch + 1}/{s.config.epochs}")
        prepare, xs, ys, step, forward_loss = s.prepare, data.x, data.y, self.step, self._forward_loss
        # CPU: keep the logits, one argmax per epoch costs less than one per step; CUDA: the
        # argmax per step is queued work, and the epoch's logits need not stay in memory
        per_step_argmax = s.device.type == "cuda"
        with s.sharded():  # augmentation: this rank's own draws (cfs.engine.distributed)
            for start in range(0, m, bs):
                s.step_in_epoch = start // bs
                idx = order[start : start + bs]
                s.batch = Batch(prepare(xs[idx], train=True), ys[idx], idx,
                                (idx >= s.n_incoming_rows) if joined else None)
                s.outputs = None
                h.cfs_before_batch(state=s)
                if not isinstance(s.batch, Batch):
                    raise TypeError("state.batch must stay a cfs.engine.batch.Batch: append replayed rows "
                                    "with state.batch.append_replayed(x, y, source)")
                loss = h.cfs_training_step(state=s)
                if loss is None:
                    step(forward_loss)
                    detached = step.last_loss
                else:
                    detached = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss),
                                                                                                 device=s.device)
                batch = s.batch
                if s.outputs is not None and s.outputs.shape[0] == batch.size:  # a replaced step may set it
                    out = s.outputs.detach()
                    predictions.append(out.argmax(1) if per_step_argmax else out)
                    # replayed rows get target -1, which no prediction equals: not counted, no sync
                    if joined or batch.segments:
                        targets.append(torch.where(batch.incoming, batch.y, -1))
                        marked = True
                    else:
                        targets.append(batch.y)
                losses.append(detached)
                sizes.append(batch.n_drawn)
                h.cfs_after_batch(state=s)
                s.iteration += 1
                self.after_step()
                if bar is not None:
                    bar.update(batch.n_drawn)
                    if s.step_in_epoch % 50 == 0:  # the bar is a console view: it may read a loss now and then
                        bar.set_postfix(loss=f"{float(losses[-1]):.3f}", refresh=False)
        if bar is not None:
            bar.close()
        tally = EpochTally(s.experience_index, s.epoch, 0.0, losses, sizes, marked=marked)
        if predictions:  # the head's width is fixed within an experience
            pred = torch.cat(predictions)
            tally.predictions, tally.targets = (pred.argmax(1) if pred.dim() == 2 else pred), torch.cat(targets)
        return tally

    def batch_order(self, n: int) -> torch.Tensor:
        """The order in which an epoch visits the ``n`` training rows: a seeded shuffle. A loop
        of another kind may override it (the online loop keeps its stream's order)."""
        return torch.randperm(n, generator=self.state.generator).to(self.state.device)

    def after_step(self) -> None:
        """Called after every training batch (after ``cfs_after_batch``); nothing here. A loop
        of another kind may override it (the online loop evaluates every K batches)."""

    def default_step(self) -> torch.Tensor:
        """Forward, base loss plus every plugin's extra loss, backward, optimizer step."""
        return self.step(self._forward_loss)

    def _forward_loss(self) -> torch.Tensor:
        """Forward all rows of the batch; the base loss (``cfs_base_loss`` or cross-entropy over
        all seen classes). The shared step adds the ``cfs_loss`` terms."""
        s, h = self.state, self.hooks
        batch = s.batch
        s.features, s.outputs = s.model.forward_all(batch.x)
        h.cfs_after_forward(state=s)
        base = h.cfs_base_loss(state=s)
        return F.cross_entropy(s.outputs, batch.y) if base is None else base

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, record: bool = True) -> tuple[list[float], list[float]]:
        """Accuracy and loss on every experience's test data; appended to the matrix when
        ``record`` (the initial, untrained row is kept apart for forward transfer). With
        ``eval_seen_only`` only the experiences trained so far are evaluated; the others read
        NaN (not measured), and so do the metrics that need them (forward transfer). In a
        distributed run each rank scores its part of the test data; the counts are summed and
        the predictions gathered, so every rank records the same numbers."""
        s, h = self.state, self.hooks
        x, y, owner = self._test
        n_exp = len(s.scenario.experiences)
        if getattr(s.config, "eval_seen_only", False):
            upto = s.experience_index + 1 if record else 0
            keep = sum(s.results.test_sizes[:upto])
            x, y, owner = x[:keep], y[:keep], owner[:keep]  # test data are stacked in experience order
            if not keep:
                nan = [float("nan")] * n_exp
                return nan, list(nan)
        distributed.sync_buffers(s.model)
        h.cfs_before_eval(state=s)
        s.model.eval()
        total = len(y)
        lo, hi = distributed.split_range(total)
        xs, ys = x[lo:hi], y[lo:hi]
        dtype = amp_dtype(s.device, getattr(s.config, "amp_dtype", "auto"))
        preds, losses = [], []
        for start in self.bars.bar(range(0, len(ys), s.config.eval_batch_size), desc="evaluation", unit="batch"):
            xb = s.prepare(xs[start : start + s.config.eval_batch_size])
            yb = ys[start : start + s.config.eval_batch_size]
            if s.n_seen == 0:  # nothing learnt yet: no class can be predicted
                preds.append(torch.full_like(yb, -1))
                losses.append(torch.zeros(len(yb), device=s.device))
                continue
            with autocast(s.device, s.config.amp, dtype):
                scores = s.scores(xb)[:, : s.n_seen].float()
            preds.append(scores.argmax(1))
            losses.append(F.cross_entropy(scores, yb.clamp(max=s.n_seen - 1), reduction="none"))
        pred = torch.cat(preds) if preds else y[:0]
        loss = torch.cat(losses) if losses else torch.zeros(0, device=s.device)
        mine = owner[lo:hi]
        sums = torch.stack([torch.bincount(mine, minlength=n_exp).double(),
                            torch.bincount(mine, weights=(pred == ys).double(), minlength=n_exp),
                            torch.bincount(mine, weights=loss.double(), minlength=n_exp)])
        present, hits, loss_sums = distributed.all_reduce_sum(sums)
        pred = distributed.gather_rows(pred, total)
        count = present.clamp(min=1)
        acc, mean_loss = (hits / count).float(), (loss_sums / count).float()
        if len(y) < len(self._test[1]):  # experiences not evaluated: NaN, not 0
            missing = present == 0
            acc, mean_loss = acc.masked_fill(missing, float("nan")), mean_loss.masked_fill(missing, float("nan"))
        acc, mean_loss = acc.tolist(), mean_loss.tolist()
        if record:
            s.results.rows.append(acc)
            s.results.losses.append(mean_loss)
            s.results.last_targets, s.results.last_predictions = y.cpu(), pred.cpu()
            h.cfs_after_eval(state=s)
        s.model.train()
        return acc, mean_loss
