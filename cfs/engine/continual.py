"""The continual loop: for each experience, grow the head, train, evaluate the whole stream.

Every step calls a hook of :mod:`cfs.hookspec`; the defaults here are plain fine-tuning with
cross-entropy over all seen classes. Data live on the run's device; a batch is an index slice
of the experience's tensors, augmented and normalised on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cfs.engine.devices import autocast
from cfs.engine.hooks import ActiveHooks
from cfs.engine.optim import build_optimizer, build_scheduler
from cfs.engine.state import RunState
from cfs.scenarios.base import Experience


@dataclass
class EpochLog:
    """One line of ``training_results.csv``."""

    experience: int
    epoch: int
    loss: float
    accuracy: float
    seconds: float


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
        self.scaler = torch.amp.GradScaler("cuda", enabled=state.config.amp and state.device.type == "cuda")
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
        s, h = self.state, self.hooks
        h.cfs_before_run(state=s)
        s.results.initial, s.results.initial_losses = self.evaluate(record=False)
        exps = s.scenario.experiences
        for exp in tqdm(exps, desc="experiences", disable=not self.progress, leave=False):
            t0 = time.perf_counter()
            self.train_experience(exp)
            self.timings.train_seconds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            self.evaluate(record=True)
            self.timings.eval_seconds.append(time.perf_counter() - t0)
        h.cfs_after_run(state=s)
        return s

    # ----------------------------------------------------------------------------- training
    def train_experience(self, exp: Experience) -> None:
        s, h = self.state, self.hooks
        s.experience = exp
        s.n_seen = max(s.n_seen, max(exp.classes) + 1)
        head = s.model.head
        if hasattr(head, "expand") and head.out_features < s.n_seen:
            head.expand(s.n_seen - head.out_features)
        s.train_data = exp.train.to(s.device)
        h.cfs_before_training_exp(state=s)
        if h.cfs_train_experience(state=s) is None:
            self._epochs()
        h.cfs_after_training_exp(state=s)

    def _epochs(self) -> None:
        s, h, cfg = self.state, self.hooks, self.state.config
        extra = [p for ps in h.cfs_extra_parameters(state=s) for p in (ps or [])]
        s.optimizer = build_optimizer(cfg, list(s.model.parameters()) + extra)
        s.scheduler = build_scheduler(cfg, s.optimizer, cfg.epochs)
        for epoch in tqdm(range(cfg.epochs), desc=f"exp {s.experience_index} epochs", disable=not self.progress, leave=False):
            s.epoch = epoch
            t0 = time.perf_counter()
            h.cfs_before_epoch(state=s)
            loss_sum, correct, seen = self._one_epoch()
            if s.scheduler is not None:
                s.scheduler.step()
            h.cfs_after_epoch(state=s)
            n = max(seen, 1)
            self.timings.epochs.append(
                EpochLog(s.experience_index, epoch, float(loss_sum) / n, float(correct) / n, time.perf_counter() - t0)
            )

    def _one_epoch(self) -> tuple[float, float, int]:
        """Train one epoch; return the summed loss, the number of correct predictions (on the
        experience's own samples) and the number of samples. Per-batch statistics are only
        collected here and reduced once at the end of the epoch, which keeps the step cheap."""
        s, h, bs = self.state, self.hooks, self.state.config.batch_size
        data = s.train_data
        n = len(data)
        order = torch.randperm(n, generator=s.generator).to(s.device)
        s.model.train()
        losses: list[torch.Tensor] = []
        sizes: list[int] = []
        outputs: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            m = min(bs, n - start)
            s.batch, s.batch_index = (s.prepare(data.x[idx], train=True), data.y[idx]), idx
            h.cfs_before_batch(state=s)
            loss = h.cfs_training_step(state=s)
            if loss is None:
                loss = self.default_step()
                # strategies may append replayed samples after the batch's own m rows
                outputs.append(s.outputs.detach()[:m])
                targets.append(s.batch[1][:m])
            losses.append(loss.detach() if torch.is_tensor(loss) else torch.tensor(float(loss)))
            sizes.append(m)
            h.cfs_after_batch(state=s)
            s.iteration += 1
        loss_sum, correct = self._epoch_statistics(losses, sizes, outputs, targets)
        return loss_sum, correct, n

    @staticmethod
    def _epoch_statistics(losses: list[torch.Tensor], sizes: list[int], outputs: list[torch.Tensor],
                          targets: list[torch.Tensor]) -> tuple[float, float]:
        """(summed loss, correct predictions) of an epoch in a handful of tensor ops: with few
        batches per epoch (small experiences), per-element reductions cost as much as a step."""
        if not losses:
            return 0.0, 0.0
        stacked = torch.stack([t.reshape(()) for t in losses]).float()
        weights = torch.tensor(sizes, dtype=torch.float32, device=stacked.device)
        loss_sum = float(torch.dot(stacked, weights))
        correct = 0.0
        if outputs:  # the head's width is fixed within an experience
            pred = torch.cat(outputs).argmax(1)
            correct = float((pred == torch.cat(targets)).sum())
        return loss_sum, correct

    def default_step(self) -> torch.Tensor:
        """Forward, base loss plus every plugin's extra loss, backward, optimizer step."""
        s, h = self.state, self.hooks
        if s.config.amp:
            with autocast(s.device, True):
                loss = self._forward_loss()
        else:
            loss = self._forward_loss()
        s.loss = loss
        h.cfs_before_backward(state=s)
        s.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():  # fp16 on CUDA
            self.scaler.scale(loss).backward()
            h.cfs_after_backward(state=s)
            self.scaler.step(s.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            h.cfs_after_backward(state=s)
            s.optimizer.step()
        return loss

    def _forward_loss(self) -> torch.Tensor:
        s, h = self.state, self.hooks
        x, y = s.batch
        s.features, s.outputs = s.model.forward_all(x)
        h.cfs_after_forward(state=s)
        base = h.cfs_base_loss(state=s)
        loss = F.cross_entropy(s.outputs, y) if base is None else base
        for term in h.cfs_loss(state=s):
            loss = loss + term
        return loss

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, record: bool = True) -> tuple[list[float], list[float]]:
        """Accuracy and loss on every experience's test data; appended to the matrix when
        ``record`` (the initial, untrained row is kept apart for forward transfer)."""
        s, h = self.state, self.hooks
        x, y, owner = self._test
        h.cfs_before_eval(state=s)
        s.model.eval()
        preds, losses = [], []
        for start in range(0, len(y), s.config.eval_batch_size):
            xb = s.prepare(x[start : start + s.config.eval_batch_size])
            yb = y[start : start + s.config.eval_batch_size]
            if s.n_seen == 0:  # nothing learnt yet: no class can be predicted
                preds.append(torch.full_like(yb, -1))
                losses.append(torch.zeros(len(yb), device=s.device))
                continue
            with autocast(s.device, s.config.amp):
                scores = s.scores(xb)[:, : s.n_seen].float()
            preds.append(scores.argmax(1))
            losses.append(F.cross_entropy(scores, yb.clamp(max=s.n_seen - 1), reduction="none"))
        pred, loss = torch.cat(preds), torch.cat(losses)
        hit = (pred == y).float()
        n_exp = len(s.scenario.experiences)
        count = torch.bincount(owner, minlength=n_exp).clamp(min=1).float()
        acc = (torch.bincount(owner, weights=hit, minlength=n_exp) / count).tolist()
        mean_loss = (torch.bincount(owner, weights=loss, minlength=n_exp) / count).tolist()
        if record:
            s.results.rows.append(acc)
            s.results.losses.append(mean_loss)
            s.results.last_targets, s.results.last_predictions = y.cpu(), pred.cpu()
            h.cfs_after_eval(state=s)
        s.model.train()
        return acc, mean_loss
