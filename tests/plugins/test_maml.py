"""MAML, FOMAML, ANIL and BOIL learn on a synthetic few-shot problem, and adapt the parameters
their papers say. (Exact meta-gradients against learn2learn: tests/meta/test_maml_vs_l2l.py.)"""

from __future__ import annotations

import pytest
import torch

from cfs.errors import CfsError
from cfs.meta.batchnorm import BatchStatNorm
from cfs_plugins.anil import ANIL
from cfs_plugins.boil import BOIL
from cfs_plugins.maml import FOMAML, MAML
from episodic_synthetic import SyntheticEpisodes, accuracy, make_state, meta_train, one_thread  # noqa: F401


@pytest.mark.parametrize("cls,floor,gain", [(MAML, 0.6, 0.3), (ANIL, 0.6, 0.3), (BOIL, 0.55, 0.25),
                                            (FOMAML, 0.3, 0.1)])
def test_meta_training_learns_unseen_classes(cls, floor, gain):
    strategy, state, data = cls(), make_state(), SyntheticEpisodes()
    strategy.cfs_before_run(state=state)
    before = accuracy(strategy, state, data)
    losses = meta_train(strategy, state, data, iterations=400)
    after = accuracy(strategy, state, data)
    assert sum(losses[-50:]) < sum(losses[:50])
    assert after >= floor and after >= before + gain, (before, after)


def adapted_change(strategy, state, data) -> dict[str, float]:
    """How much each parameter group moves in one inner loop (from the vmapped adapt)."""
    from cfs.meta.inner import adapt, episode_forward, split_parameters

    loop = strategy.inner_loop(True)
    tasks = data.sample(range(30), 1, 5, 1, 5, torch.Generator().manual_seed(0))
    adapted, fixed = split_parameters(state.model, loop.adapt)
    fast = adapt(episode_forward(state.model, 5), adapted, fixed, tasks.support_x[0], tasks.support_y[0], loop)
    return {k: (fast[k] - adapted[k]).abs().max().item() for k in fast}


def test_inner_loops_adapt_the_documented_parameters():
    data = SyntheticEpisodes()
    for cls, expect in ((MAML, {"backbone", "head"}), (ANIL, {"head"}), (BOIL, {"backbone"})):
        state = make_state()
        moved = adapted_change(cls(), state, data)
        assert {k.split(".")[0] for k in moved} == expect
        assert all(v > 0 for v in moved.values())


def test_maml_switches_batchnorm_to_batch_statistics():
    from cfs.models.backbones import conv4
    from cfs.models.heads import IncrementalLinear
    from cfs.models.model import ContinualModel
    from types import SimpleNamespace

    body = conv4(1, 28, hidden=4)
    model = ContinualModel(body, IncrementalLinear(body.out_dim, 5))
    bn_weight = model.backbone.net[1].weight
    MAML().cfs_before_run(state=SimpleNamespace(model=model))
    assert isinstance(model.backbone.net[1], BatchStatNorm)
    assert model.backbone.net[1].weight is bn_weight  # same parameter: optimizers and checkpoints keep it
    assert not any("running" in k for k in model.state_dict())


def test_bad_options_are_user_errors():
    with pytest.raises(CfsError):
        MAML.make_options({"adapt": "neck"})
    with pytest.raises(CfsError):
        MAML.make_options({"inner_lr": 0})
    assert FOMAML.make_options({}).first_order is True
