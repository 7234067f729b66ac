"""A small synthetic few-shot problem for meta-learning tests (not a test module).

Classes differ only in 4 of the 64 pixels of a 1x8x8 "image" (class means far apart there,
tight within a class); the other 60 pixels are loud noise shared by all classes. A randomly
initialised network adapted on one shot is near chance; a meta-learned one that has found the
informative pixels is accurate, so learning shows as a large accuracy gain on unseen classes.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cfs.models.backbones import mlp
from cfs.models.heads import IncrementalLinear
from cfs.models.model import ContinualModel
from cfs.scenarios.episodes import EpisodeBatch

N_CLASSES, TRAIN_CLASSES, INFORMATIVE = 40, 30, 4


class SyntheticEpisodes:
    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.means = torch.zeros(N_CLASSES, 64)
        self.means[:, :INFORMATIVE] = 3.0 * torch.randn(N_CLASSES, INFORMATIVE, generator=g)

    def sample(self, classes: range, tasks: int, n: int, k: int, q: int, g: torch.Generator) -> EpisodeBatch:
        chosen = torch.stack([torch.tensor(list(classes))[torch.randperm(len(classes), generator=g)[:n]]
                              for _ in range(tasks)])  # (T, N)

        def draw(per: int) -> torch.Tensor:
            mu = self.means[chosen].repeat_interleave(per, dim=1)  # (T, N*per, 64)
            noise = torch.randn(mu.shape, generator=g)
            noise[..., :INFORMATIVE] *= 0.3
            noise[..., INFORMATIVE:] *= 3.0
            return self.scale * (mu + noise).view(tasks, n * per, 1, 8, 8)

        ys = torch.arange(n).repeat_interleave(k).expand(tasks, -1).clone()
        yq = torch.arange(n).repeat_interleave(q).expand(tasks, -1).clone()
        return EpisodeBatch(draw(k), ys, draw(q), yq, n, k, q)


class TinyConv(nn.Module):
    """One [3x3 conv, BN, ReLU, 2x2 max-pool] block: an 8-channel 4x4 map, tokens like Conv-4's."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                                 nn.MaxPool2d(2))
        self.out_dim = channels * 16

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


def make_state(seed: int = 0, n_way: int = 5, hidden: int = 32, conv: bool = False) -> SimpleNamespace:
    """What the meta-learning hooks read from a run state: the model, the input shape, device."""
    torch.manual_seed(seed)
    body = TinyConv() if conv else mlp(1, 8, hidden=hidden)
    model = ContinualModel(body, IncrementalLinear(body.out_dim, n_way))
    scenario = SimpleNamespace(input_shape=(1, 8, 8), transform=SimpleNamespace(resize=None))
    return SimpleNamespace(model=model, scenario=scenario, device=torch.device("cpu"))


def accuracy(strategy, state, data: SyntheticEpisodes, episodes: int = 40, seed: int = 123) -> float:
    g = torch.Generator().manual_seed(seed)
    tasks = data.sample(range(TRAIN_CLASSES, N_CLASSES), episodes, 5, 1, 5, g)
    with torch.enable_grad():
        scores = strategy.cfs_predict_episode(state=state, tasks=tasks)
    return (scores.argmax(-1) == tasks.query_y).float().mean().item()


def meta_train(strategy, state, data: SyntheticEpisodes, iterations: int, meta_batch: int = 8, lr: float = 3e-3,
               q: int = 5, seed: int = 0) -> list[float]:
    """The episodic loop's contract in miniature: Adam over the model plus extra parameters."""
    extra = strategy.cfs_extra_parameters(state=state) if hasattr(strategy, "cfs_extra_parameters") else []
    opt = torch.optim.Adam(list(state.model.parameters()) + list(extra or []), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(iterations):
        tasks = data.sample(range(TRAIN_CLASSES), meta_batch, 5, 1, q, g)
        loss = strategy.cfs_meta_loss(state=state, tasks=tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, tiny meta-batches run ~20x faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
