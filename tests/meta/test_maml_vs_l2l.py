"""Our functional MAML meta-gradient equals learn2learn's ``MAML`` on the same model, weights and
episodes (second and first order), to 1e-5.

learn2learn 0.2.0 is built by ``scripts/install-l2l.sh`` (CI runs it). Without it these tests
SKIP with a loud reason: the equality is then NOT checked.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cfs.meta import InnerLoop, meta_query_logits, use_batch_statistics
from cfs.models.backbones import conv4_tbn, mlp
from cfs.models.heads import IncrementalLinear
from cfs.models.model import ContinualModel
from cfs.scenarios.episodes import EpisodeBatch

l2l = pytest.importorskip(
    "learn2learn",
    reason="LEARN2LEARN NOT INSTALLED: the MAML-vs-learn2learn meta-gradient check did NOT run "
           "(run scripts/install-l2l.sh)",
)


def make_tasks(t: int, n: int, k: int, q: int, shape: tuple[int, ...], seed: int) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, n * k, *shape, generator=g, dtype=torch.float64)
    qx = torch.randn(t, n * q, *shape, generator=g, dtype=torch.float64)
    sy = torch.arange(n).repeat_interleave(k).expand(t, -1).clone()
    qy = torch.arange(n).repeat_interleave(q).expand(t, -1).clone()
    return EpisodeBatch(sx, sy, qx, qy, n, k, q)


def make_model(kind: str, n_way: int) -> ContinualModel:
    torch.manual_seed(0)
    body = conv4_tbn(in_channels=1, image_size=16, hidden=8) if kind == "conv4" else mlp(1, 8, hidden=16)
    model = ContinualModel(body, IncrementalLinear(body.out_dim, n_way)).double()
    with torch.no_grad():  # non-trivial BN affine parameters, so their gradients are checked too
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ours(model: ContinualModel, tasks: EpisodeBatch, loop: InnerLoop, vectorize: bool) -> dict[str, torch.Tensor]:
    model = use_batch_statistics(copy.deepcopy(model))  # what the MAML strategies do before a run
    logits = meta_query_logits(model, tasks, loop, vectorize=vectorize)
    F.cross_entropy(logits.flatten(0, 1), tasks.query_y.flatten()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def theirs(model: ContinualModel, tasks: EpisodeBatch, loop: InnerLoop) -> dict[str, torch.Tensor]:
    """learn2learn's documented MAML recipe: clone, adapt on the support, sum query losses."""
    model.zero_grad()
    maml = l2l.algorithms.MAML(model, lr=loop.lr, first_order=loop.first_order)
    total = 0.0
    for t in range(tasks.n_tasks):
        learner = maml.clone()
        for _ in range(loop.steps):
            learner.adapt(F.cross_entropy(learner(tasks.support_x[t]), tasks.support_y[t]))
        total = total + F.cross_entropy(learner(tasks.query_x[t]), tasks.query_y[t])
    (total / tasks.n_tasks).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


CASES = [  # (backbone, first_order, inner steps, vmap over tasks; None: the default choice)
    ("conv4", False, 1, True), ("conv4", True, 1, True), ("conv4", False, 2, True), ("conv4", False, 1, False),
    ("mlp", False, 1, True), ("mlp", True, 1, True), ("mlp", False, 2, True), ("mlp", True, 2, True),
    ("mlp", True, 2, False),
    # the per-task loop on plain autograd (fused BatchNorm kernel), the CPU default for conv models
    ("conv4", True, 1, False), ("conv4", False, 2, False), ("conv4", False, 1, None),
]
SHAPES = {"conv4": (1, 16, 16), "mlp": (1, 8, 8)}


@pytest.mark.parametrize("kind,first_order,steps,vectorize", CASES)
def test_meta_gradient_matches_learn2learn(kind, first_order, steps, vectorize):
    n_way = 5
    tasks = make_tasks(t=4, n=n_way, k=1, q=3, shape=SHAPES[kind], seed=1)
    model = make_model(kind, n_way)
    loop = InnerLoop(steps=steps, lr=0.4, first_order=first_order)
    a = ours(model, tasks, loop, vectorize)
    b = theirs(copy.deepcopy(model), tasks, loop)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")


def test_second_and_first_order_differ():
    """Guards against a silent no-op ``first_order`` flag: the two meta-gradients must differ."""
    tasks = make_tasks(t=2, n=5, k=1, q=3, shape=(1, 8, 8), seed=2)
    model = make_model("mlp", 5)
    so = ours(model, tasks, InnerLoop(lr=0.4), True)
    fo = ours(model, tasks, InnerLoop(lr=0.4, first_order=True), True)
    assert max((so[n] - fo[n]).abs().max().item() for n in so) > 1e-4


def test_head_only_matches_learn2learn_anil():
    """ANIL as learn2learn writes it: ``MAML`` wraps only the head; the body runs outside it."""
    tasks = make_tasks(t=3, n=5, k=1, q=3, shape=(1, 8, 8), seed=3)
    model = make_model("mlp", 5)
    loop = InnerLoop(steps=2, lr=0.4, adapt="head")
    a = ours(model, tasks, loop, True)
    ref = copy.deepcopy(model)
    ref.zero_grad()
    head = l2l.algorithms.MAML(ref.head, lr=loop.lr)
    total = 0.0
    for t in range(tasks.n_tasks):
        learner = head.clone()
        fs, fq = ref.backbone(tasks.support_x[t]), ref.backbone(tasks.query_x[t])
        for _ in range(loop.steps):
            learner.adapt(F.cross_entropy(learner(fs), tasks.support_y[t]))
        total = total + F.cross_entropy(learner(fq), tasks.query_y[t])
    (total / tasks.n_tasks).backward()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(a[name], p.grad, atol=1e-5, rtol=1e-5)
