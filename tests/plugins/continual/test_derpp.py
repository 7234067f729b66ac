"""DER++'s loss against hand-computed values, and its two head modes on split-digits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cfs_plugins.derpp import DERpp, masked_logit_mse


def test_masked_logit_mse_by_hand():
    out = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    stored = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # row 0 matches 3 columns: 0 + 4 + 9; row 1 only its first: 1 -> 14 over 4 entries
    assert float(masked_logit_mse(out, stored, torch.tensor([3, 1]))) == pytest.approx(3.5)


def one_sample_state(head: str) -> tuple[DERpp, SimpleNamespace]:
    """A buffer holding x = (1, 2), y = 1, z = (0.5, -0.5, 0), and a linear model with
    f(x) = (x1, x2, x1 + x2) = (1, 2, 3) on it."""
    derpp = DERpp(DERpp.make_options({"buffer": 1, "alpha": 0.2, "beta": 0.5, "head": head}))
    derpp.buffer.add(torch.tensor([[1.0, 2.0]]), torch.tensor([1]), torch.tensor([[0.5, -0.5, 0.0]]))
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.bias.zero_()
    state = SimpleNamespace(model=model, outputs=torch.zeros(1, 3), n_seen=3, generator=torch.Generator(),
                            config=SimpleNamespace(batch_size=4), transform=SimpleNamespace(resize=None),
                            prepare=lambda x, train=False: x.float())
    return derpp, state


@pytest.mark.parametrize("head", ["full", "grow"])
def test_derpp_loss_by_hand(head):
    derpp, state = one_sample_state(head)
    alpha_term = ((1 - 0.5) ** 2 + (2 + 0.5) ** 2 + (3 - 0) ** 2) / 3  # 15.5 / 3
    beta_term = float(torch.logsumexp(torch.tensor([1.0, 2.0, 3.0]), 0)) - 2.0  # CE of class 1
    assert derpp.cfs_loss(state=state).item() == pytest.approx(0.2 * alpha_term + 0.5 * beta_term, rel=1e-6)


def test_derpp_loss_trains_the_model_not_the_buffer():
    derpp, state = one_sample_state("full")
    derpp.cfs_loss(state=state).backward()
    assert state.model.weight.grad.abs().sum() > 0
    assert not derpp.buffer.x.requires_grad and not derpp.buffer.logits.requires_grad


def test_full_head_stores_every_class_logit(digits):
    derpp = digits("derpp")["result"].state.strategies[0]
    # the paper's fixed head: logits of all 10 classes, also those not seen at insertion
    assert (derpp.buffer.widths == 10).all()
    assert derpp.buffer.logits.shape[1] == 10


def test_growing_head_stores_the_classes_seen_so_far(digits):
    derpp = digits("derpp", {"derpp": {"head": "grow"}})["result"].state.strategies[0]
    assert derpp.buffer.widths.min() == 2 and derpp.buffer.widths.max() == 10
    assert set(derpp.buffer.widths.unique().tolist()) <= {2, 4, 6, 8, 10}


@pytest.mark.parametrize(("buffer", "weights"), [(200, (0.1, 0.5)), (500, (0.2, 0.5)), (1000, (0.2, 0.5)),
                                                 (2000, (0.1, 1.0)), (5120, (0.1, 1.0))])
def test_default_weights_follow_the_buffer_size(buffer, weights):
    o = DERpp.make_options({"buffer": buffer})
    assert (o.alpha, o.beta) == weights
    assert DERpp.make_options({"buffer": buffer, "alpha": 0.3}).alpha == 0.3


def test_unknown_head_mode_is_refused():
    from cfs.errors import CfsError
    with pytest.raises(CfsError, match="head"):
        DERpp.make_options({"head": "fixed"})


def test_buffer_holds_raw_training_images(digits):
    """mammoth's ``not_aug_inputs``: stored rows are training images as the data set holds them
    (augmentation happens again on replay), not the augmented, normalised view."""
    state = digits("derpp")["result"].state
    derpp = state.strategies[0]
    train = torch.cat([e.train.x for e in state.scenario.experiences]).flatten(1)
    stored = derpp.buffer.x.flatten(1)
    assert stored.dtype == train.dtype
    matches = (stored.unsqueeze(1) == train.unsqueeze(0)).all(-1).any(1)
    assert matches.all()
