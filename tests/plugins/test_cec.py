"""CEC: the graph-attention adaptation, the rotated pseudo-incremental episodes and a full run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfs.errors import CfsError
from cfs.evaluation.fscil import fscil_metrics
from cfs_plugins.cec import Cec, CecOptions, GraphAttention, adapted_logits, rotate
from _ptm_support import ptm_pm, ptm_run, synthetic_scenario  # noqa: F401 (fixtures)

FAST = {"epochs": 2, "episodes": 10, "query": 5, "lr": 0.01, "lr_attention": 0.01}


def test_rotations_are_the_codes_quarter_turns():
    x = torch.arange(4.0).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    # the code's 90 degrees: transpose(2, 3).flip(2); 180: flip(2).flip(3); 270: transpose(2, 3).flip(3)
    assert torch.equal(rotate(x, 1), x.transpose(2, 3).flip(2))
    assert torch.equal(rotate(x, 2), x.flip(2).flip(3))
    assert torch.equal(rotate(x, 3), x.transpose(2, 3).flip(3))


def test_adapted_logits_attend_over_prototypes_and_each_query_alone():
    torch.manual_seed(0)
    att = GraphAttention(8).eval()
    protos, queries = torch.randn(5, 8), torch.randn(3, 8)
    out = adapted_logits(att, protos, queries, temperature=16.0)
    assert out.shape == (3, 5) and out.abs().max() <= 16.0 + 1e-5
    # each query is adapted together with the prototypes only, not with the other queries
    alone = adapted_logits(att, protos, queries[1:2], temperature=16.0)
    assert torch.allclose(out[1:2], alone, atol=1e-5)
    # by hand for one query: softmax(QK^T/sqrt(d)) V, fc, residual, LayerNorm, then 16 * cosine
    x = torch.cat([protos, queries[:1]]).unsqueeze(0)
    a = torch.softmax(att.w_q(x) @ att.w_k(x).transpose(1, 2) / 8 ** 0.5, dim=2)
    y = att.norm(att.fc(a @ att.w_v(x)) + x)[0]
    want = 16 * torch.nn.functional.cosine_similarity(y[5:], y[:5], dim=-1)
    assert torch.allclose(out[0], want, atol=1e-5)


def test_options_are_checked():
    with pytest.raises(ValueError):
        CecOptions(low_shot=2, shot=1)
    with pytest.raises(ValueError):
        CecOptions(way=0)


def test_cec_learns_and_sessions_are_training_free(ptm_run):
    scenario = synthetic_scenario("fscil", n_classes=6)
    result = ptm_run("cec", scenario, head="cosine", epochs=3, lr=0.05, options={"cec": FAST})
    strat: Cec = result.state.strategies[0]
    assert strat.n_base == 3 and strat.bank.prototypes.shape[0] == 6
    assert strat.attention is not None and strat.episode_images > 0
    # 2 epochs x 10 episodes x (3 ways x (1 shot + 5 queries) + 3 rotated x (1 + 5))
    assert strat.episode_images == 2 * 10 * (3 * 6 + 3 * 6)
    assert {e.experience for e in result.timings.epochs} == {0}  # only the base session is trained
    res = result.state.results
    m = fscil_metrics(np.array(res.rows), np.array(res.test_sizes))
    assert m["session_accuracy"][-1] > 1 / 6 + 0.3  # chance over 6 classes is 0.17
    assert m["novel_accuracy"][-1] > 1 / 6 + 0.2
    # round trip of what it learnt
    again = Cec(strat.options)
    again.load_state_dict(strat.state_dict())
    x = torch.randn(4, 256)
    assert torch.allclose(adapted_logits(again.attention.eval(), strat.bank.prototypes, x, 16.0),
                          adapted_logits(strat.attention.eval(), strat.bank.prototypes, x, 16.0))


def test_too_few_images_for_the_episodes_is_refused_before_training(ptm_run):
    scenario = synthetic_scenario("fscil", n_classes=6, n_train=10)
    with pytest.raises(CfsError, match="lower -o cec.query"):
        ptm_run("cec", scenario, head="cosine", options={"cec": {"query": 15}})
