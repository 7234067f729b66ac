"""ER-ACE and GDumb on split-digits, their memories, GDumb's reset, and their compositions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cfs import hookimpl
from cfs.config import resolve
from cfs.data.arrays import ArrayDataset
from cfs.engine.batch import Batch
from cfs.engine.runner import run_strategy
from cfs.errors import CfsError
from cfs.greedy_memory import GreedyBalancedMemory
from cfs.losses import er_ace_loss, new_class_cross_entropy
from cfs.models.heads import IncrementalLinear
from cfs.models.reset import InitialWeights
from cfs.plugins import get_plugin_manager
from cfs_plugins.er_ace import ErAce
from cfs_plugins.gdumb import GDumb
from test_state_round_trip import round_trip


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", ["er-ace", "gdumb"])
def test_beats_finetune_by_30_points(digits, name):
    assert digits(name)["last"] >= digits("finetune")["last"] + 0.30


@pytest.mark.parametrize("spec", ["er-ace+lwf", "gdumb+lwf"])
def test_composes_with_lwf_and_learns(digits, spec):
    run = digits(spec)
    lwf = run["result"].state.strategy("lwf")
    assert lwf.teacher.n_classes == 10  # LwF acted: its teacher followed every experience
    assert run["last"] >= digits("finetune")["last"] + 0.30


# --------------------------------------------------------------------------- ER-ACE


def test_er_ace_memory_holds_only_incoming_samples(digits):
    """Composed with replay (its memory is joined to the training data as replayed rows) and
    with ER-ACE's own replayed rows in every batch, the reservoir is offered exactly the
    incoming rows: each experience's own samples, once per epoch, stored raw."""
    state = digits("er-ace+replay")["result"].state
    erace = state.strategy("er-ace")
    own = sum(len(e.train) for e in state.scenario.experiences)
    assert erace.buffer.seen == state.config.epochs * own
    assert len(erace.buffer) == 500 and erace.buffer.x.dtype == torch.uint8
    train = {(bytes(x.flatten().tolist()), int(y)) for e in state.scenario.experiences for x, y in zip(e.train.x, e.train.y)}
    stored = {(bytes(x.flatten().tolist()), int(y)) for x, y in zip(erace.buffer.x, erace.buffer.y)}
    assert stored <= train
    assert len(erace.buffer.y.unique()) == 10  # a uniform sample of the whole stream


def fake_state(batch_size: int = 4) -> SimpleNamespace:
    y = torch.tensor([4, 5, 4, 5])
    batch = Batch(torch.zeros(4, 2), y, index=torch.arange(4))
    return SimpleNamespace(batch=batch, generator=torch.Generator().manual_seed(0),
                           config=SimpleNamespace(batch_size=batch_size),
                           prepare=lambda x, train=False: x.float() + (100.0 if train else 0.0),
                           train_data=ArrayDataset(torch.arange(8).view(4, 2), y), n_seen=6)


@pytest.mark.parametrize(("minibatch", "expected"), [(None, 4), (3, 3)])
def test_er_ace_appends_a_replay_minibatch_once_the_memory_holds_samples(minibatch, expected):
    erace = ErAce(ErAce.make_options({"buffer": 10, "minibatch": minibatch}))
    state = fake_state()
    erace.cfs_before_batch(state=state)
    assert state.batch.segments == []  # empty memory: nothing to replay
    erace.buffer.add(torch.ones(6, 2), torch.tensor([0, 1, 2, 3, 0, 1]))
    erace.cfs_before_batch(state=state)
    seg = state.batch.segment("er-ace")
    assert seg.stop - seg.start == expected and state.batch.replayed.sum() == expected
    assert torch.all(state.batch.x[seg.start:] == 101.0)  # prepared with the training transform
    assert set(state.batch.y[seg.start:].tolist()) <= {0, 1, 2, 3}


def test_er_ace_base_loss_is_the_asymmetric_loss_of_the_batch():
    erace = ErAce()
    state = fake_state()
    erace.buffer.add(torch.ones(2, 2), torch.tensor([0, 1]))
    erace.cfs_before_batch(state=state)
    state.outputs = torch.randn(state.batch.size, 6)
    expected = er_ace_loss(state.outputs, state.batch.y, state.batch.replayed, 6)
    assert erace.cfs_base_loss(state=state).item() == pytest.approx(expected.item())
    # the incoming rows (classes 4, 5) are masked to their own logits: not the plain CE
    assert expected.item() != pytest.approx(nn.functional.cross_entropy(state.outputs, state.batch.y).item())


def test_er_ace_keeps_its_base_loss_before_a_teacher_that_sorts_first():
    """clkd (which sorts before er-ace) answers cfs_base_loss only as a declared fallback:
    ER-ACE's answer is the base loss of the composition."""
    pm = get_plugin_manager([])
    clkd = pm.strategies.get("clkd")(None)
    erace = ErAce()
    model = nn.Sequential()
    model.forward_all = lambda x: (x, x)
    clkd.teacher.snapshot(model, 4)
    state = fake_state()
    erace.buffer.add(torch.ones(2, 2), torch.tensor([0, 1]))
    erace.cfs_before_batch(state=state)
    state.outputs = torch.randn(state.batch.size, 6)
    state.model, state.experience_index, state.iteration = model, 1, 0
    with pm.composition([clkd, erace]):
        got = pm.hook.cfs_base_loss(state=state)
    assert got.item() == pytest.approx(er_ace_loss(state.outputs, state.batch.y, state.batch.replayed, 6).item())
    assert got.item() != pytest.approx(new_class_cross_entropy(state.outputs, state.batch.y, 4).item())


# --------------------------------------------------------------------------- GDumb's memory


def test_greedy_memory_by_hand():
    """capacity 4, stream labels 0 0 0 0 1 1 2 1: the four 0s fill it; each 1 (quota 4/2 = 2)
    evicts a 0; the 2 (quota 4/3) evicts from the largest class, 0 and 1 tied at 2 -> class 0;
    the last 1 is dropped (class 1 holds 2 >= 4/3)."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 1])
    data = ArrayDataset(torch.arange(8).view(8, 1), labels)
    memory = GreedyBalancedMemory(4)
    memory.update(data, torch.Generator().manual_seed(0), shuffle=False)
    assert memory.counts() == {0: 1, 1: 2, 2: 1}
    stored = memory.dataset()
    assert sorted(stored.x.flatten().tolist())[1:] == [4, 5, 6]  # both first 1s and the 2 are in
    assert int(stored.x.flatten().min()) in {0, 1, 2, 3}         # a random survivor of class 0
    assert torch.equal(stored.y, labels[stored.x.flatten()])      # images stay with their labels


def test_greedy_memory_stores_everything_while_there_is_room():
    memory = GreedyBalancedMemory(10)
    memory.update(ArrayDataset(torch.zeros(6, 1), torch.tensor([0, 0, 0, 0, 0, 1])), torch.Generator())
    assert memory.counts() == {0: 5, 1: 1} and len(memory) == 6


def test_gdumb_memory_is_class_balanced(digits):
    memory = digits("gdumb")["result"].state.strategies[0].memory
    counts = list(memory.counts().values())
    assert len(counts) == 10 and sum(counts) == 500
    assert max(counts) - min(counts) <= 1


# --------------------------------------------------------------------------- GDumb's reset


class RecordingGDumb(GDumb):
    """GDumb that records the model when each experience starts training and when it ends."""

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.start: list[dict[str, torch.Tensor]] = []
        self.end: list[dict[str, torch.Tensor]] = []
        self.rows: list[tuple[int, int]] = []

    @staticmethod
    def weights(model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    @hookimpl
    def cfs_before_run(self, state) -> None:
        super().cfs_before_run(state)
        self.initial_weights = self.weights(state.model)

    @hookimpl
    def cfs_before_training_exp(self, state) -> None:
        super().cfs_before_training_exp(state)
        self.start.append(self.weights(state.model))
        self.rows.append((len(state.train_data), state.n_incoming_rows))

    @hookimpl
    def cfs_after_training_exp(self, state) -> None:
        self.end.append(self.weights(state.model))


def test_gdumb_resets_the_model_and_trains_on_its_memory_only():
    pm = get_plugin_manager([])
    factory = pm.scenarios.get("split-digits")
    cfg = resolve(factory.defaults, {"epochs": 2, "seed": 0, "device": "cpu", "strategies": ["gdumb"]})
    gdumb = RecordingGDumb()
    run_strategy(pm, cfg, "gdumb", factory(cfg), progress=False, strategies=[gdumb])
    assert len(gdumb.start) == 5
    backbone = [k for k in gdumb.initial_weights if k.startswith("backbone.")]
    assert backbone
    for t, start in enumerate(gdumb.start):
        for k in backbone:  # the backbone is the run's initial one before every experience...
            assert torch.equal(start[k], gdumb.initial_weights[k]), (t, k)
        if t:  # ...not the previous experience's trained one
            assert any(not torch.equal(start[k], gdumb.end[t - 1][k]) for k in backbone)
            # the head rows are re-drawn: the trained old-class rows are gone
            assert not torch.equal(start["head.weight"][: 2 * t], gdumb.end[t - 1]["head.weight"][: 2 * t])
    # trained on the memory only: every row replayed, none of the experience's own
    assert gdumb.rows == [(min(500, n), 0) for n in (251, 503, 755, 1004, 1257)]


def test_initial_weights_restore_in_place_and_init_new_head_rows_like_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), IncrementalLinear(16, 2))
    saved = InitialWeights(model)
    first = model[0].weight
    head_before = model[2].weight.detach().clone()
    model[2].expand(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    saved.restore(model)
    assert model[0].weight is first  # in place: an optimizer built later sees the same objects
    assert torch.equal(model[0].weight, saved.tensors["0.weight"])
    assert torch.equal(model[2].weight[:2], head_before)
    new_w, new_b = model[2].weight[2:], model[2].bias[2:]
    bound = 1 / math.sqrt(16)  # nn.Linear: Kaiming uniform a=sqrt(5) and bias, both +-1/sqrt(fan_in)
    assert new_w.abs().max() <= bound and new_b.abs().max() <= bound
    assert new_w.std() > bound / 4  # freshly drawn, not left at the +1 shift or zero


def test_initial_weights_refuse_a_changed_shape():
    model = nn.Linear(3, 2)
    saved = InitialWeights(model)
    model.weight = nn.Parameter(torch.zeros(2, 4))
    with pytest.raises(CfsError, match="weight"):
        saved.restore(model)


# --------------------------------------------------------------------------- state and options


def test_er_ace_buffer_round_trips(digits):
    original = digits("er-ace")["result"].state.strategies[0]
    fresh = round_trip(original)
    assert fresh.buffer.seen == original.buffer.seen
    assert torch.equal(fresh.buffer.x, original.buffer.x) and torch.equal(fresh.buffer.y, original.buffer.y)


def test_gdumb_memory_and_initial_weights_round_trip(digits):
    original = digits("gdumb")["result"].state.strategies[0]
    fresh = round_trip(original)
    a, b = original.memory.dataset(), fresh.memory.dataset()
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert fresh.memory.counts() == original.memory.counts()
    assert all(torch.equal(fresh.initial.tensors[k], v) for k, v in original.initial.tensors.items())
    # the restored memory goes on with the same greedy rule
    more = ArrayDataset(a.x[:5].clone(), a.y[:5].clone())
    original.memory.update(more, torch.Generator().manual_seed(1))
    fresh.memory.update(more, torch.Generator().manual_seed(1))
    assert torch.equal(original.memory.dataset().x, fresh.memory.dataset().x)


@pytest.mark.parametrize(("cls", "values"), [(ErAce, {"buffer": 0}), (ErAce, {"minibatch": 0}), (GDumb, {"buffer": 0})])
def test_bad_options_are_one_line_errors(cls, values):
    with pytest.raises(CfsError, match="at least 1"):
        cls.make_options(values)
