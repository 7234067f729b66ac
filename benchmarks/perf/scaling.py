"""Hot paths that must not grow with the memory budget or the number of parameters.

Three measurements, each of the code cfs runs now ("new") against the code it replaced
("old", kept here verbatim as reference functions), alternating old and new in one
single-threaded process and timing CPU time (``time.process_time``), so both sides see the
same machine load:

1. **replay, batch mode**: one training step of a 2 x 256 MLP on 32 incoming CIFAR-sized
   uint8 rows plus 32 rows drawn from a class-balanced memory of 200 / 2,000 / 20,000
   exemplars (``Replay.cfs_before_batch``, then forward, cross-entropy, backward, SGD).
   Old: the memory's per-class tensors concatenated at every step (what
   ``ClassBalancedMemory.dataset()`` did); new: the joined memory built once per change.
2. **herding**: ``ClassBalancedMemory.update`` with herding for 10 classes of 5,000 rows of
   64-d features (ResNet-32's width, CIFAR-10's class size) at budgets 200 / 2,000 / 20,000
   (20 / 200 / 2,000 exemplars per class). Old: the per-step distance formula; new: the
   vectorised :func:`cfs.memory.herding_order`. The chosen indices are checked equal.
3. **EWC**: one training step of the split-digits MLP (64 -> 256 -> 256 -> 10) on 32 rows
   with the EWC penalty (old: a Python loop over parameters through autograd; new: the fused
   :class:`cfs_plugins.ewc.QuadraticPenalty`, a deferred closed-form term computed right after
   ``backward``, its value added to the logged loss and its gradient to ``.grad``, as the shared
   step does; with numba installed, in one pass by :mod:`cfs.engine.fused_quadratic`) against
   the same step without it (fine-tuning); "ewc torch" is the new penalty without the numba
   kernel (torch's multi-tensor ops, what runs without the extra ``fast``). Then the same comparison through
   the engine: CPU time per training step of ``ewc`` (with and without the kernel) and ``finetune`` runs on split-digits
   (experiences 2-5, where the penalty is on; hooks, the new-class cross-entropy and the shared
   step included). "ewc floor" is a timing reference, not a penalty: the
   fine-tuning step plus one fused multiply-add that reads the two weight-sized buffers any
   EWC penalty must read every step (the square-rooted Fisher and the anchor) into the
   gradients with weight 0. On a small model the penalty is memory-bound; the floor shows how
   much of its cost that reading alone takes on the machine at hand.

Usage: ``python benchmarks/perf/scaling.py [--repeats 5] [--herding-rounds 1] [--quick]``;
prints one table (about 3 minutes of CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cfs import hookimpl, testing
from cfs.data.arrays import ArrayDataset
from cfs.data.transforms import BatchTransform
from cfs.engine import fused_quadratic
from cfs.engine.batch import Batch
from cfs.memory import ClassBalancedMemory, herding_order
from cfs_plugins.ewc import QuadraticPenalty
from cfs_plugins.replay import Replay, ReplayOptions
from cfs.strategy import Strategy

BUDGETS = (200, 2_000, 20_000)


def cpu_seconds(fn: Callable[[], object], n: int) -> float:
    """Mean CPU seconds of ``fn()`` over ``n`` calls."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n


def alternate_runs(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every side once per round, ``repeats`` rounds; every round's number per side."""
    runs: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, measure in sides.items():
            runs[name].append(measure())
    return runs


def alternate(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, tuple[float, float]]:
    """Run every side once per round, ``repeats`` rounds; (median, spread) per side."""
    return {k: (statistics.median(v), (max(v) - min(v)) / 2) for k, v in alternate_runs(sides, repeats).items()}


def paired_ratio(runs: dict[str, list[float]], side: str, base: str) -> float:
    """Median over rounds of ``side / base`` measured in the same round: on a shared machine
    whose speed drifts between rounds this is steadier than the ratio of the two medians."""
    return statistics.median(a / b for a, b in zip(runs[side], runs[base]))


def ratio_quartiles(runs: dict[str, list[float]], side: str, base: str) -> str:
    """The first and third quartiles of the per-round ratios: how much one round's ratio moves."""
    q1, _, q3 = statistics.quantiles([a / b for a, b in zip(runs[side], runs[base])], n=4)
    return f"(rounds' quartiles {q1:.2f}-{q3:.2f})"


# ----------------------------------------------------------------------------- replay, batch mode
def _old_joined(memory: ClassBalancedMemory) -> ArrayDataset:
    """What ``ClassBalancedMemory.dataset()`` did before: concatenate at every call."""
    xs, ys = zip(*(memory.store[c] for c in memory.classes))
    return ArrayDataset(torch.cat(xs), torch.cat(ys))


def replay_steps(budget: int, old: bool, steps: int) -> Callable[[], float]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(max(budget // 10, 1) + 1)
    data = ArrayDataset(torch.randint(0, 256, (len(y), 3, 32, 32), dtype=torch.uint8, generator=g), y)
    replay = Replay(ReplayOptions(budget=budget, selection="reservoir", mode="batch"))
    replay.memory.update(data, generator=g)
    if old:
        replay.memory.dataset = lambda: _old_joined(replay.memory)  # type: ignore[method-assign]
    transform = BatchTransform((0.5,) * 3, (0.25,) * 3)
    state = SimpleNamespace(generator=g, prepare=lambda x, train=False: transform(x, train=train))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3072, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    incoming = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (32,), generator=g)

    def step() -> None:
        state.batch = Batch(state.prepare(incoming, train=True), labels)
        replay.cfs_before_batch(state)
        loss = F.cross_entropy(model(state.batch.x), state.batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    return lambda: cpu_seconds(step, steps)


# ----------------------------------------------------------------------------- herding
def _old_herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """``herding_order`` before vectorisation (the distance formula, one step at a time)."""
    phi = F.normalize(features.float(), dim=1)
    mu = phi.mean(0)
    m = min(m, phi.shape[0])
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(phi.shape[0], dtype=torch.bool, device=phi.device)
    for k in range(1, m + 1):
        dist = (mu.unsqueeze(0) - (running.unsqueeze(0) + phi) / k).norm(dim=1)
        dist = dist.masked_fill(~available, float("inf"))
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


def herding_run(budget: int, old: bool, per_class: int, dim: int, check: dict) -> Callable[[], float]:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(10).repeat_interleave(per_class)
    feats = torch.randn(len(y), dim, generator=g)
    data = ArrayDataset(feats.view(len(y), dim, 1, 1), y)
    order = _old_herding if old else herding_order

    def run() -> float:
        import cfs.memory as memory_module

        memory = ClassBalancedMemory(budget=budget, selection="herding")
        real = memory_module.herding_order
        memory_module.herding_order = order
        try:
            t0 = time.process_time()
            memory.update(data, embed=lambda x: x.flatten(1))
            seconds = time.process_time() - t0
        finally:
            memory_module.herding_order = real
        check.setdefault(budget, []).append(memory.dataset().x.flatten(1))
        return seconds

    return run


# ----------------------------------------------------------------------------- EWC
def _old_penalty(model: nn.Module, fisher: dict, anchor: dict) -> torch.Tensor:
    """``EWC.cfs_loss`` before fusion: a Python loop of per-parameter ops."""
    penalty = torch.zeros(())
    for n, p in model.named_parameters():
        if n in fisher:
            rows = fisher[n].shape[0] if p.dim() else None
            cur = p[:rows] if rows is not None and p.shape != fisher[n].shape else p
            penalty = penalty + (fisher[n] * (cur - anchor[n]).pow(2)).sum()
    return penalty


def ewc_steps(kind: str, steps: int, values: dict) -> Callable[[], float]:
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    fisher = {n: torch.rand(p.shape, generator=g) * 1e-4 for n, p in model.named_parameters()}
    anchor = {n: p.detach().clone() + 0.01 for n, p in model.named_parameters()}
    named = [(n, p) for n, p in model.named_parameters() if n in fisher]
    params = [p for _, p in named]
    fused = QuadraticPenalty(params, [fisher[n] for n, _ in named], [anchor[n] for n, _ in named], scale=500.0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    new = kind in ("ewc new", "ewc torch")
    if kind == "ewc old" or new:
        with torch.no_grad():
            values[kind] = float(_old_penalty(model, fisher, anchor) if kind == "ewc old" else fused(params).value / 500.0)

    def step() -> None:
        fused_quadratic.enabled = kind != "ewc torch"
        loss = F.cross_entropy(model(x), y)
        if kind == "ewc old":
            loss = loss + 500.0 * _old_penalty(model, fisher, anchor)
        elif new:  # as the shared step does (cfs.engine.step): a deferred term, computed
            term = fused(params)  # after backward (the weight 500 is folded into the penalty, as EWC does)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if new:
            term.add_gradient()
            loss = loss.detach() + term.value  # the logged loss
        elif kind == "ewc floor":  # timing only: one fused pass over the two buffers EWC must read
            torch._foreach_addcmul_([p.grad for p in params], fused.root, fused.anchor, value=0.0)
        opt.step()

    step()
    return lambda: cpu_seconds(step, steps)


class StepTimer(Strategy):
    """CPU time of every training step of the experiences after the first (where EWC's penalty
    is on), from ``cfs_before_batch`` to ``cfs_after_batch``: what a user's run spends per step,
    hooks and the shared step included."""

    name = "step-timer"

    def __init__(self, options: object | None = None) -> None:
        super().__init__(options)
        self.seconds, self.steps, self._t0 = 0.0, 0, 0.0

    @hookimpl
    def cfs_before_batch(self, state) -> None:  # noqa: ANN001
        self._t0 = time.process_time()

    @hookimpl
    def cfs_after_batch(self, state) -> None:  # noqa: ANN001
        if state.experience_index >= 1:
            self.seconds += time.process_time() - self._t0
            self.steps += 1


class _TimerPlugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry) -> None:  # noqa: ANN001
        registry.add(StepTimer)


def engine_steps(side: str, epochs: int) -> Callable[[], float]:
    """Mean CPU seconds per training step on split-digits in the engine of the side's strategy
    (``ewc torch``: EWC without the numba kernel)."""
    def run() -> float:
        fused_quadratic.enabled = side != "ewc torch"
        strategy = side.split()[0]
        result = testing.run(f"{strategy}+step-timer", plugins=[_TimerPlugin], epochs=epochs)
        timer = result.state.strategy("step-timer")
        return timer.seconds / timer.steps
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timing (default 200)")
    parser.add_argument("--herding-rounds", type=int, default=1,
                        help="alternating herding rounds (default 1: the old side takes a minute)")
    parser.add_argument("--quick", action="store_true", help="smaller herding classes (1,000 rows)")
    parser.add_argument("--engine-epochs", type=int, default=10,
                        help="epochs of the in-engine EWC comparison (default 10)")
    parser.add_argument("--parts", default="replay,herding,ewc", help="which measurements (comma-separated)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, 1 thread, CPU seconds (time.process_time), median of "
          f"{args.repeats} alternating rounds (+- half the range)\n")
    if "replay" in parts:
        measure_replay(args)
    if "herding" in parts:
        measure_herding(args)
    if "ewc" in parts:
        measure_ewc(args)


def measure_replay(args: argparse.Namespace) -> None:
    runs = alternate_runs({f"{side} {b}": replay_steps(b, side == "old", args.steps)
                           for b in BUDGETS for side in ("old", "new")}, args.repeats)
    replay = {k: (statistics.median(v), (max(v) - min(v)) / 2) for k, v in runs.items()}
    print("replay (batch mode), ms per training step")
    print(f"  {'budget':>8} {'old':>14} {'new':>14}")
    for b in BUDGETS:
        o, n = replay[f"old {b}"], replay[f"new {b}"]
        print(f"  {b:>8} {1e3 * o[0]:>8.2f} +-{1e3 * o[1]:.2f} {1e3 * n[0]:>8.2f} +-{1e3 * n[1]:.2f}")
    flat = paired_ratio(runs, f"new {BUDGETS[-1]}", f"new {BUDGETS[0]}")
    print(f"  new step at {BUDGETS[-1]:,} / at {BUDGETS[0]}: {flat:.3f}x (median over rounds of the round's ratio)\n")


def measure_herding(args: argparse.Namespace) -> None:
    per_class = 1_000 if args.quick else 5_000
    check: dict = {}
    rounds = max(1, args.herding_rounds)
    herding = alternate({f"{side} {b}": herding_run(b, side == "old", per_class, 64, check)
                         for b in BUDGETS for side in ("old", "new")}, rounds)
    same = all(torch.equal(v[0], w) for v in check.values() for w in v[1:])
    print(f"herding, seconds per memory update (10 classes x {per_class:,} rows, 64-d; {rounds} round(s))")
    print(f"  {'budget':>8} {'old':>14} {'new':>14} {'speed-up':>9}")
    for b in BUDGETS:
        o, n = herding[f"old {b}"], herding[f"new {b}"]
        print(f"  {b:>8} {o[0]:>8.3f} +-{o[1]:.3f} {n[0]:>8.3f} +-{n[1]:.3f} {o[0] / n[0]:>8.1f}x")
    print(f"  same exemplars chosen by old and new: {same}\n")


def measure_ewc(args: argparse.Namespace) -> None:
    values: dict = {}
    sides = ("finetune", "ewc old", "ewc new", "ewc torch", "ewc floor")
    runs = alternate_runs({k: ewc_steps(k, args.steps, values) for k in sides}, args.repeats)
    print("EWC, ms per training step (MLP 64-256-256-10, batch 32); ratio: median over rounds of the "
          "round's EWC / finetune")
    for k in sides:
        v = runs[k]
        print(f"  {k:<9} {1e3 * statistics.median(v):>8.3f} +-{1e3 * (max(v) - min(v)) / 2:.3f}  "
              f"{paired_ratio(runs, k, 'finetune'):.2f}x finetune {ratio_quartiles(runs, k, 'finetune')}")
    print(f"  penalty old {values['ewc old']:.9g}, new {values['ewc new']:.9g}, torch {values['ewc torch']:.9g}")
    kernel = fused_quadratic._kernel() is not None
    print(f"  ewc new: {'the numba kernel' if kernel else 'torch multi-tensor ops (numba is not installed)'}; "
          "ewc torch: torch multi-tensor ops")
    engine_sides = ("finetune", "ewc", "ewc torch")
    engine = alternate_runs({k: engine_steps(k, args.engine_epochs) for k in engine_sides}, args.repeats)
    print(f"\nin the engine: cfs bench's split-digits run ({args.engine_epochs} epochs, batch 32), ms per training step "
          "of experiences 2-5 (hooks and the shared step included)")
    for k in engine_sides:
        v = engine[k]
        print(f"  {k:<9} {1e3 * statistics.median(v):>8.3f} +-{1e3 * (max(v) - min(v)) / 2:.3f}  "
              f"{paired_ratio(engine, k, 'finetune'):.2f}x finetune {ratio_quartiles(engine, k, 'finetune')}")


if __name__ == "__main__":
    main()
