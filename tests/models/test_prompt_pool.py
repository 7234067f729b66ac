"""The prompt pool of L2P and DualPrompt (cfs.prompt_pool): matching, selection, pull loss."""

from __future__ import annotations

import math

import pytest
import torch

from cfs.prompt_pool import PromptPool, cosine_similarity, pull_loss, top_n


def test_selection_picks_the_keys_closest_to_the_query():
    keys = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    query = torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.3, 5.0]])
    sim = cosine_similarity(query, keys)
    assert top_n(sim, 1).tolist() == [[0], [2]]
    assert top_n(sim, 2).tolist() == [[0, 3], [2, 1]]  # ordered by similarity
    torch.testing.assert_close(sim[0, 3], torch.tensor((2.0 + 0.1) / (math.hypot(2.0, 0.1) * math.sqrt(2))))


def test_batchwise_selection_takes_the_most_frequent_choices_for_the_whole_batch():
    # rows choose {0, 1}, {1, 2}, {1, 3}: 1 three times, then 0, 2, 3 once (tie: lowest index)
    sim = torch.tensor([[0.9, 0.8, 0.0, 0.0], [0.0, 0.9, 0.8, 0.0], [0.0, 0.9, 0.0, 0.8]])
    assert top_n(sim, 2, batchwise=True).tolist() == [[1, 0]] * 3


def test_pull_loss_is_minus_the_summed_selected_similarity_per_image():
    sim = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.4, 0.9]])
    idx = torch.tensor([[0, 1], [2, 1]])
    torch.testing.assert_close(pull_loss(sim, idx), torch.tensor(-(0.5 + 0.2 + 0.9 + 0.4) / 2))


def test_pool_select_returns_the_values_of_the_chosen_keys_and_pulls_only_them():
    pool = PromptPool(4, 3, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pool.keys.copy_(torch.eye(4, 3))
    values, idx, loss = pool.select(torch.tensor([[0.0, 1.0, 3.0]]), 1)
    assert idx.tolist() == [[2]] and torch.equal(values[0, 0], pool.values[2])
    torch.testing.assert_close(loss, torch.tensor(-3.0 / math.sqrt(10.0)))
    loss.backward()
    assert pool.keys.grad[[0, 1, 3]].abs().sum() == 0 and pool.keys.grad[2].abs().sum() > 0
    forced = pool.select(torch.tensor([[0.0, 0.0, 3.0]]), 1, forced=torch.tensor([[0]]))[1]
    assert forced.tolist() == [[0]]
    with pytest.raises(ValueError, match="cannot select"):
        top_n(torch.zeros(1, 3), 4)
