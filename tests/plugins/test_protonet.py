"""ProtoNet: prototypes, squared distances and loss by hand; it meta-learns (see also the
loop test in tests/engine)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from cfs.models.heads import IncrementalLinear
from cfs.models.model import ContinualModel
from cfs.scenarios.episodes import EpisodeBatch
from cfs_plugins.protonet import ProtoNet, protonet_logits, prototypes


def test_prototypes_and_logits_by_hand():
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]]])  # 2-way 2-shot
    labels = torch.tensor([[0, 0, 1, 1]])
    assert prototypes(support, labels, 2).tolist() == [[[1.0, 0.0], [0.0, 3.0]]]
    query = torch.tensor([[[1.0, 1.0]]])
    # ||(1,1)-(1,0)||^2 = 1, ||(1,1)-(0,3)||^2 = 1 + 4 = 5
    assert protonet_logits(support, labels, query, 2).tolist() == [[[-1.0, -5.0]]]


def test_meta_loss_is_query_cross_entropy_by_hand():
    body = torch.nn.Flatten()
    body.out_dim = 2
    model = ContinualModel(body, IncrementalLinear(2, 2))
    tasks = EpisodeBatch(support_x=torch.tensor([[[0.0, 0.0], [0.0, 3.0]]]).view(1, 2, 1, 1, 2),
                         support_y=torch.tensor([[0, 1]]),
                         query_x=torch.tensor([[[0.0, 1.0], [0.0, 2.0]]]).view(1, 2, 1, 1, 2),
                         query_y=torch.tensor([[0, 1]]), n_way=2, k_shot=1, q_query=1)
    state = SimpleNamespace(model=model)
    loss = ProtoNet().cfs_meta_loss(state=state, tasks=tasks)
    # query 0: d = (1, 4) -> p0 = e^-1/(e^-1+e^-4); query 1: d = (4, 1) -> p1 the same
    p = math.exp(-1) / (math.exp(-1) + math.exp(-4))
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-6)
    scores = ProtoNet().cfs_predict_episode(state=state, tasks=tasks)
    assert scores.shape == (1, 2, 2) and scores.argmax(-1).tolist() == [[0, 1]]
    assert torch.allclose(F.softmax(scores, -1)[0, 0, 0], torch.tensor(p))
