"""Meta-iterations per second: cfs's functional MAML (torch.func, vmap over tasks) against
learn2learn 0.2.0's ``MAML`` (module clones, a Python loop over tasks), at identical settings:
5-way 1-shot 15-query, meta-batch 32, one inner step of 0.4, second order, Adam 1e-3.

Both run in this one process on the same model weights and the same episodes, alternating one
meta-iteration of each, and the medians are compared, so machine load hits both alike.
Two regimes: Conv-4 (64 channels, batch-statistics BN) on 28x28 inputs, compute-bound on a
CPU; and a small MLP (64-64-64 on 8x8 inputs, as split-digits), where per-task overhead
dominates as it does for small models on a GPU. ``--mlp-size 28`` gives a 784-64-64 MLP,
which on a CPU is no longer overhead-bound (the matmuls of 32 x 80 images of 784 pixels
dominate), so expect a smaller ratio there. Ours runs with its default task batching
(``vectorize=None``: a per-task loop on plain autograd for conv models on a CPU, one vmap
otherwise); ``--vectorize true|false`` forces one. Needs learn2learn: scripts/install-l2l.sh.

    nice python benchmarks/perf/maml_vs_l2l.py [--rounds 20] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from cfs.meta import InnerLoop, meta_query_logits, use_batch_statistics
from cfs.models.backbones import conv4_tbn, mlp
from cfs.models.heads import IncrementalLinear
from cfs.models.model import ContinualModel
from cfs.scenarios.episodes import EpisodeBatch

N, K, Q, T = 5, 1, 15, 32


def episodes(device: torch.device, size: int = 28) -> EpisodeBatch:
    g = torch.Generator().manual_seed(0)
    sx = torch.randn(T, N * K, 1, size, size, generator=g)
    qx = torch.randn(T, N * Q, 1, size, size, generator=g)
    sy = torch.arange(N).repeat_interleave(K).expand(T, -1).clone()
    qy = torch.arange(N).repeat_interleave(Q).expand(T, -1).clone()
    return EpisodeBatch(sx, sy, qx, qy, N, K, Q).to(device)


def model(kind: str, size: int = 28) -> ContinualModel:
    torch.manual_seed(0)
    body = conv4_tbn(1, size) if kind == "conv4" else mlp(1, size, hidden=64)
    return ContinualModel(body, IncrementalLinear(body.out_dim, N))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours_step(m, opt, tasks, loop, vectorize: bool | None = None) -> None:
    logits = meta_query_logits(m, tasks, loop, vectorize)
    loss = F.cross_entropy(logits.flatten(0, 1), tasks.query_y.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


def l2l_step(maml, opt, tasks, loop) -> None:
    opt.zero_grad()
    total = 0.0
    for t in range(tasks.n_tasks):
        learner = maml.clone()
        learner.adapt(F.cross_entropy(learner(tasks.support_x[t]), tasks.support_y[t]))
        total = total + F.cross_entropy(learner(tasks.query_x[t]), tasks.query_y[t])
    (total / tasks.n_tasks).backward()
    opt.step()


def compare(kind: str, rounds: int, device: torch.device, size: int = 28, vectorize: bool | None = None) -> float:
    import learn2learn as l2l

    tasks, loop = episodes(device, size), InnerLoop(steps=1, lr=0.4)
    base = model(kind, size).to(device)
    mine = use_batch_statistics(copy.deepcopy(base))
    theirs = l2l.algorithms.MAML(copy.deepcopy(base), lr=loop.lr, first_order=False)
    opt_a = torch.optim.Adam(mine.parameters(), 1e-3)
    opt_b = torch.optim.Adam(theirs.parameters(), 1e-3)
    times: dict[str, list[float]] = {"cfs": [], "l2l": []}
    for r in range(rounds + 2):  # two warm-up rounds
        for name, step in (("cfs", lambda: ours_step(mine, opt_a, tasks, loop, vectorize)),
                           ("l2l", lambda: l2l_step(theirs, opt_b, tasks, loop))):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            if r >= 2:
                times[name].append(time.perf_counter() - t0)
    a, b = statistics.median(times["cfs"]), statistics.median(times["l2l"])
    print(f"{kind:6s} {size}x{size} cfs {1 / a:8.2f} it/s   learn2learn {1 / b:8.2f} it/s   speed-up x{b / a:.2f}   "
          f"(median of {rounds}, meta-batch {T}, {N}-way {K}-shot {Q}-query)")
    return b / a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--regimes", default="conv4,mlp")
    p.add_argument("--mlp-size", type=int, default=8, help="input side of the MLP regime (28: a 784-input MLP)")
    p.add_argument("--vectorize", choices=("auto", "true", "false"), default="auto",
                   help="our task batching: auto (the default rule), true (vmap) or false (loop)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    vectorize = {"auto": None, "true": True, "false": False}[args.vectorize]
    for kind in args.regimes.split(","):
        compare(kind, args.rounds, device, 28 if kind == "conv4" else args.mlp_size, vectorize)


if __name__ == "__main__":
    main()
