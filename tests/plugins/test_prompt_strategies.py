"""L2P, DualPrompt and CODA-Prompt end to end through the engine on a tiny pre-trained timm ViT.

The ViT (``tiny-vit`` of :mod:`_tiny_vit`) is first pre-trained by plain fine-tuning on
synthetic classes of another seed (disjoint class centres), as the methods assume a pre-trained
backbone; each method then runs a 3-experience synthetic class-incremental stream and must beat
fine-tuning of the same ViT and chance, train nothing of the backbone, and round-trip its state.
"""

from __future__ import annotations

import io

import pytest
import torch

import _tiny_vit
from cfs import testing
from cfs.config import resolve
from cfs.engine.batch import Batch
from cfs.engine.checkpoint import snapshot
from cfs.engine.runner import run_strategy
from cfs.errors import CfsError
from cfs_plugins.coda_prompt import ortho_penalty, orthonormal_rows

OPTIONS = {
    "l2p": None,
    "dualprompt": {"dualprompt": {"g_layers": [0], "e_layers": [1]}},
    "coda-prompt": {"coda-prompt": {"pool_size": 6, "layers": [0, 1]}},
}
RUN = {"backbone": "tiny-vit", "optimizer": "adam", "lr": 0.01, "batch_size": 16, "epochs": 3}


@pytest.fixture(scope="module")
def stream():
    return testing.synthetic_stream(n_classes=6, n_experiences=3, per_class=60, test_per_class=30, size=8)


@pytest.fixture(scope="module")
def pretrained():
    pre = testing.synthetic_stream(n_classes=8, n_experiences=1, per_class=60, test_per_class=10, size=8, seed=7)
    _tiny_vit.WEIGHTS = None
    r = testing.run("finetune", plugins=[_tiny_vit], scenario=pre, **{**RUN, "epochs": 5, "lr": 0.003,
                                                                       "batch_size": 32})
    _tiny_vit.WEIGHTS = {k: v.clone() for k, v in r.state.model.backbone.state_dict().items()}
    yield _tiny_vit.WEIGHTS
    _tiny_vit.WEIGHTS = None


@pytest.fixture(scope="module")
def finetune_accuracy(pretrained, stream):
    return testing.final_accuracy(testing.run("finetune", plugins=[_tiny_vit], scenario=stream, **RUN))


@pytest.fixture(scope="module")
def runs(pretrained, stream):
    return {name: testing.run(name, plugins=[_tiny_vit], scenario=stream, options=opts, **RUN)
            for name, opts in OPTIONS.items()}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_learns_beyond_finetune_and_chance_with_the_backbone_frozen(name, runs, pretrained, finetune_accuracy):
    result = runs[name]
    acc = testing.final_accuracy(result)
    assert acc > 1 / 6 + 0.2, f"{name}: final accuracy {acc:.3f} is near chance"
    assert acc > finetune_accuracy + 0.1, f"{name}: {acc:.3f} vs finetune {finetune_accuracy:.3f}"
    backbone = result.state.model.backbone
    assert all(torch.equal(v, pretrained[k]) for k, v in backbone.state_dict().items())  # nothing of it trained
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("name", list(OPTIONS))
def test_state_round_trips_and_predicts_the_same(name, runs):
    state = runs[name].state
    original = state.strategy(name)
    buf = io.BytesIO()
    torch.save(original.state_dict(), buf)
    buf.seek(0)
    fresh = type(original)(original.options)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    data = state.experience.train
    x = state.prepare(data.x[:32])
    state.model.eval()
    torch.testing.assert_close(fresh.cfs_predict(state=state, x=x), original.cfs_predict(state=state, x=x))


def test_only_prompts_keys_and_head_get_gradients(runs):
    state = runs["l2p"].state
    l2p = state.strategy("l2p")
    data = state.experience.train
    state.batch = Batch(state.prepare(data.x[:8], train=False), data.y[:8], index=torch.arange(8))
    state.model.train()
    l2p.cfs_before_batch(state=state)
    state.features, state.outputs = state.model.forward_all(state.batch.x)
    l2p.cfs_after_forward(state=state)
    loss = l2p.cfs_base_loss(state=state) + l2p.cfs_loss(state=state)
    state.model.zero_grad(set_to_none=True)
    l2p.prompts.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in state.model.backbone.parameters())
    assert l2p.prompts.values.grad.abs().sum() > 0 and l2p.prompts.keys.grad.abs().sum() > 0
    assert state.model.head.weight.grad.abs().sum() > 0


def test_train_mask_hides_the_classes_of_other_experiences(runs):
    state = runs["coda-prompt"].state
    coda = state.strategy("coda-prompt")
    state.outputs = torch.zeros(2, 6, requires_grad=True)
    state.batch = Batch(torch.zeros(2, 1, 8, 8), torch.tensor([4, 5]), index=torch.arange(2))
    loss = coda.cfs_base_loss(state=state)  # the last experience has classes 4 and 5: log 2
    torch.testing.assert_close(loss, torch.tensor(0.6931471805599453))


def test_dualprompt_trains_the_task_prompt_and_matches_keys_at_test_time(runs):
    state = runs["dualprompt"].state
    dp = state.strategy("dualprompt")
    q = torch.randn(4, 32)
    inputs, pull = dp.prompt_inputs(state, q, train=True)
    assert torch.equal(inputs.prefixes[1][0][0], dp.prompts.e.values[2, 0, 0])  # task 2's E-prompt, keys
    torch.testing.assert_close(pull, -dp.prompts.e.similarity(q)[:, 2].sum() / 4)
    with torch.no_grad():
        dp.prompts.e.keys[:3] = torch.eye(3, 32)
    inputs, _ = dp.prompt_inputs(state, torch.eye(3, 32) * 5, train=False)
    for i in range(3):
        assert torch.equal(inputs.prefixes[1][1][i], dp.prompts.e.values[i, 0, 1])


def test_coda_components_are_frozen_per_task_and_drawn_orthonormal(runs):
    state = runs["coda-prompt"].state
    coda = state.strategy("coda-prompt")
    K = coda.prompts.K[0]
    used = coda._used(K, train=True)
    assert used.shape[0] == 6 and used.requires_grad
    used.sum().backward()
    assert K.grad[:4].abs().sum() == 0 and K.grad[4:].abs().sum() > 0  # parts of tasks 0-1 frozen
    earlier = torch.randn(3, 8, dtype=torch.float64)
    new = orthonormal_rows(earlier, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(new @ new.T, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(new @ earlier.T, torch.zeros(4, 3, dtype=torch.float64))
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # t t^T - I = [[0, 1], [1, 1]]: mean of squares 3/4
    torch.testing.assert_close(ortho_penalty(t), torch.tensor(0.75))


def test_a_backbone_without_a_vit_is_a_one_line_error(stream):
    with pytest.raises(CfsError, match="needs a ViT backbone"):
        testing.run("l2p", scenario=stream, epochs=1, backbone="mlp")


class _Recorder:
    """A checkpointer that keeps every payload in memory: at each experience boundary and after
    every epoch."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []

    def due_at_boundary(self) -> bool:
        return True

    def due(self, epochs_done: int) -> bool:
        return True

    def write(self, payload: dict) -> None:
        self.payloads.append(snapshot(payload))


@pytest.mark.parametrize("name", ["dualprompt", "coda-prompt"])  # the two with per-task steps to restore
def test_resumed_mid_experience_ends_as_the_uninterrupted_run(name, pretrained, stream):
    pm = testing.plugin_manager([_tiny_vit])
    cfg = resolve({"scenario": None, "seed": 0, "device": "cpu", "options": OPTIONS[name], "strategies": [name],
                   **{**RUN, "epochs": 2}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recorder = _Recorder()
        ref = run_strategy(pm, cfg, name, stream, progress=False, checkpointer=recorder)
        # experience 1 after its first epoch: optimizer state, task counters and prompts restored
        payload = next(p for p in recorder.payloads if p["position"] == {"experience": 1, "epoch": 1})
        resumed = run_strategy(pm, cfg, name, stream, progress=False, resume=payload)
    finally:
        torch.set_num_threads(threads)
    assert resumed.state.results.rows == ref.state.results.rows


def test_composes_with_replay_in_either_order_and_refuses_a_second_prompt_method(pretrained, stream):
    pm = testing.plugin_manager([_tiny_vit])
    run = {**RUN, "epochs": 1}
    a = testing.run("l2p+replay", pm=pm, scenario=stream, **run)  # replayed rows get prompts, no train mask
    b = testing.run("replay+l2p", pm=pm, scenario=stream, **run)
    assert a.state.results.rows == b.state.results.rows
    with pytest.raises(CfsError, match="both replace"):
        testing.run("l2p+dualprompt", pm=pm, scenario=stream, **run)
