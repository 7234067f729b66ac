"""One run on several processes (``torchrun --nproc_per_node N -m cfs bench ...``).

Every mechanism of data-parallel training lives here once; the loops call it and behave as
a single process when the run is not distributed (every helper is then the identity or a
no-op, so single-process runs are bit for bit what they were).

How a distributed run stays one run:

* **Same start.** Every rank builds the same scenario and model from the same seed; the model
  is then broadcast from rank 0 (:func:`broadcast_module`) so no device difference can split it.
* **Sharded data, averaged gradients.** Each epoch's permutation is drawn from the run's seeded
  generator on every rank (the same permutation), padded to a multiple of the world size, and
  rank ``r`` takes rows ``r, r+N, r+2N, ...`` (:func:`shard`). ``batch_size`` stays the *global*
  batch: each rank draws ``batch_size / N`` rows, and the shared optimisation step averages the
  gradients of the model and of every strategy's extra parameters after ``backward``
  (:class:`GradientAverager`), before ``cfs_after_backward`` hooks see them. Because each rank's
  loss is a mean over an equal share, the averaged gradient is the gradient of the global
  batch's mean loss: the run is the single-process run with the same global batch, up to
  augmentation draws and floating-point order. Gradient averaging happens in the shared step
  rather than in a ``DistributedDataParallel`` wrapper because strategies call the model in
  several ways (``features``, ``forward_all``, ``torch.func.functional_call`` in meta-learning,
  frozen copies as teachers) and heads grow between experiences; DDP supports only its own
  ``forward`` and a fixed set of parameters.
* **Identical memories.** Every rank holds the full data of the experience and draws every
  selection from the same seeded generator; features used for a selection (herding, class
  means) are computed sharded and all-gathered (:func:`map_sharded`), so every rank sees the
  same bits; rows offered to a reservoir during a step are gathered from every rank
  (:func:`gather_varying`) and offered in rank order. Augmentation draws come from a per-rank generator
  (``RunState.augment_generator``), so ranks neither repeat each other's crops nor let the
  shared generator drift apart.
* **BatchNorm statistics** are averaged over ranks at the end of every epoch and before every
  evaluation (:func:`sync_buffers`); with equal shares the mean of the per-rank running means is
  the running mean over the global batches.
* **Evaluation** is sharded (:func:`split_range`) and reduced: counts with ``all_reduce``,
  predictions gathered in order for the confusion matrix.
* Only rank 0 (:func:`is_main`) writes run folders, results and checkpoints.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA (each rank on ``cuda:LOCAL_RANK``; ``gloo``
through host memory when ranks share a GPU, for checks on a one-GPU machine).
"""

from __future__ import annotations

import datetime
import os
from typing import Callable

import torch
import torch.distributed as dist

from cfs.errors import CfsError


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or an equivalent launcher) as one of
    several ranks: ``WORLD_SIZE`` > 1 in the environment."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def is_distributed() -> bool:
    """Whether a process group of more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    if is_distributed():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def rank() -> int:
    """This process's rank (0 when not distributed); readable before the process group is up,
    so ``cfs bench`` knows before any work whether it is the rank that writes."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes run folders, results and checkpoints."""
    return rank() == 0


def run_device(device: torch.device) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` in a distributed run (ranks
    share the GPUs round-robin when there are more ranks than GPUs)."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))
    return device


def backend(device: torch.device) -> str:
    """``nccl`` when every rank has a GPU of its own, ``gloo`` otherwise (on the CPU, and when
    ranks share a GPU, which NCCL refuses)."""
    if device.type == "cuda" and world_size() <= torch.cuda.device_count():
        return "nccl"
    return "gloo"


def init(device: torch.device) -> None:
    """Start the process group when launched as several ranks and none is up yet: ``nccl`` on
    CUDA, ``gloo`` otherwise. Idempotent; a no-op in a single process."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise CfsError("torch was built without torch.distributed; run cfs without torchrun")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if key not in os.environ:
            raise CfsError(f"WORLD_SIZE is set but {key} is not: start distributed runs with "
                           f"torchrun --nproc_per_node N -m cfs bench ...")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    name = backend(device)
    dist.init_process_group(name, timeout=datetime.timedelta(minutes=30),
                            device_id=device if name == "nccl" else None)


def shutdown() -> None:
    """Tear the process group down (end of ``python -m cfs``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_divisible(value: int, what: str) -> None:
    """A per-rank share must be whole, so every rank runs the same number of equal steps (one
    line, before any work)."""
    n = world_size()
    if n > 1 and value % n:
        raise CfsError(f"{what} {value} must be a multiple of the {n} processes of this distributed run "
                       f"(it is split equally across them)")


def local_share(value: int) -> int:
    """This rank's share of a global count (batch size, tasks per meta-batch)."""
    return value // world_size()


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's rows of an epoch's permutation: padded by wrapping around to a multiple of
    the world size (as ``DistributedSampler`` does), then every N-th row from the rank's
    offset, so each global batch is the permutation's next ``batch_size`` rows."""
    n = world_size()
    if n == 1:
        return order
    pad = (-len(order)) % n
    if pad:
        order = torch.cat([order, order[:pad]])
    return order[rank()::n]


def split_range(total: int) -> tuple[int, int]:
    """This rank's contiguous part ``[start, stop)`` of ``total`` rows, balanced (sizes differ
    by at most one). A single process, or fewer rows than ranks, gets everything."""
    n = world_size()
    if n == 1 or total < n:
        return 0, total
    base, extra = divmod(total, n)
    r = rank()
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    return t if dist.get_backend() != "gloo" or t.device.type == "cpu" else t.cpu()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (``t`` itself in a single process)."""
    if not is_distributed():
        return t
    buf = _comm_device(t.detach().clone())
    dist.all_reduce(buf)
    return buf.to(t.device)


def gather_rows(t: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's rows of a tensor split by :func:`split_range` over ``total`` rows, in order:
    the tensor a single process would have computed, identical on every rank."""
    n = world_size()
    if n == 1 or total < n:
        return t
    size = -(-total // n)
    buf = torch.zeros((size, *t.shape[1:]), dtype=t.dtype, device=t.device)
    buf[: len(t)] = t
    buf = _comm_device(buf)
    parts = [torch.empty_like(buf) for _ in range(n)]
    dist.all_gather(parts, buf)
    base, extra = divmod(total, n)
    rows = [p[: base + (1 if r < extra else 0)] for r, p in enumerate(parts)]
    return torch.cat(rows).to(t.device)


def gather_varying(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated in rank order, when ranks hold different numbers of rows
    (one extra exchange of the sizes). Used for what enters a memory during a step."""
    n = world_size()
    if n == 1 or not is_distributed():
        return t
    size = _comm_device(torch.tensor([len(t)], device=t.device))
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    counts = [int(c) for c in torch.cat(sizes).tolist()]
    buf = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=t.device)
    buf[: len(t)] = t
    buf = _comm_device(buf)
    parts = [torch.empty_like(buf) for _ in range(n)]
    dist.all_gather(parts, buf)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)


def map_sharded(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``batch_size`` rows, each rank computing its part and all
    of them gathered: the features memory selections (herding, class means) are computed from,
    bitwise the same on every rank. A single process computes it all."""
    start, stop = split_range(len(x))
    part = x[start:stop]
    out = [fn(part[i : i + batch_size]) for i in range(0, len(part), batch_size)]
    local = torch.cat(out) if out else torch.zeros(0)
    return gather_rows(local, len(x))


class GradientAverager:
    """Averages gradients over ranks after ``backward``, in one flat ``all_reduce`` per step.

    A parameter whose gradient is ``None`` on this rank sends zeros and keeps ``None`` (so
    optimizers skip it, as in a single process). That is right only when every rank agrees
    which gradients exist; reading the agreement back every step would make each step wait
    for the device, so the counts travel in the same ``all_reduce`` and are checked at the
    deferred loss check (:meth:`check`), which stops the run with one line if ranks disagreed.
    """

    def __init__(self) -> None:
        self.disagreements: torch.Tensor | None = None
        self._flags: dict[tuple[bool, ...], torch.Tensor] = {}  # which grads exist -> on the device, once

    def __call__(self, params: list[torch.Tensor]) -> None:
        if not is_distributed():
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        dev = params[0].device
        flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        present = tuple(p.grad is not None for p in params)
        if present not in self._flags:
            self._flags[present] = torch.tensor(present, dtype=torch.float32, device=dev)
        flat.append(self._flags[present])
        buf = _comm_device(torch.cat(flat))
        dist.all_reduce(buf)
        buf = buf.to(dev)
        n, offset = world_size(), 0
        counts = buf[-len(params):]
        split = ((counts > 0) & (counts < n)).sum()
        self.disagreements = split if self.disagreements is None else self.disagreements + split
        for p in params:
            size = p.numel()
            if p.grad is not None:
                p.grad.copy_(buf[offset : offset + size].view_as(p).div_(n))
            offset += size

    def check(self) -> None:
        """Stop with one line if some step had a gradient on some ranks only."""
        if self.disagreements is not None and int(self.disagreements):
            raise CfsError("in this distributed run some parameters had a gradient on some processes and "
                           "none on others (a loss term computed on some ranks only); run it in one process")


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a bool or number tensor) true on any rank: the same decision on every rank."""
    if not is_distributed():
        return flag
    return all_reduce_sum(flag.float()) > 0


@torch.no_grad()
def sync_buffers(module: torch.nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over ranks."""
    if not is_distributed():
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = _comm_device(torch.cat([b.reshape(-1).float() for b in bufs]))
    dist.all_reduce(flat)
    flat = flat.to(bufs[0].device).div_(world_size())
    offset = 0
    for b in bufs:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (the run's common start)."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        buf = _comm_device(t.data)
        dist.broadcast(buf, 0)
        if buf is not t.data:
            t.data.copy_(buf)
