"""A ``cfs_loss`` term returned as a :class:`ClosedFormLoss` trains exactly like the same term
through autograd: same weights, same logged loss, and every ``cfs_after_backward`` hook of the
composition sees the whole gradient."""

from __future__ import annotations

import pytest
import torch

from cfs import hookimpl, testing
from cfs.engine.closed_form import ClosedFormLoss
from cfs.strategy import Strategy

WEIGHT = 0.3


class _Anchored(Strategy):
    """``WEIGHT * sum (theta - theta_0)^2`` over the backbone, theta_0 = the weights at the start
    of each experience (a toy EWC with F = 1)."""

    compatibility = frozenset({"class-incremental"})

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.anchor: list[torch.Tensor] = []

    @hookimpl
    def cfs_before_training_exp(self, state):
        self.anchor = [p.detach().clone() for p in state.model.backbone.parameters()]

    def params(self, state) -> list[torch.Tensor]:
        return list(state.model.backbone.parameters())


class ViaAutograd(_Anchored):
    name = "anchored-autograd"

    @hookimpl
    def cfs_loss(self, state):
        if state.experience_index == 0:
            return None
        return WEIGHT * sum(((p - a) ** 2).sum() for p, a in zip(self.params(state), self.anchor))


class ViaClosedForm(_Anchored):
    name = "anchored-closed"

    @hookimpl
    def cfs_loss(self, state):
        if state.experience_index == 0:
            return None
        params = self.params(state)
        with torch.no_grad():
            diff = [p - a for p, a in zip(params, self.anchor)]
            value = WEIGHT * sum((d**2).sum() for d in diff)
        return ClosedFormLoss(value, params, diff, alpha=2 * WEIGHT)


class ViaDeferred(_Anchored):
    """The same term, computed by the shared step after ``backward`` (records whether the
    gradients of the rest of the loss already existed then)."""

    name = "anchored-deferred"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.after_backward: list[bool] = []
        self.steps = 0

    @hookimpl
    def cfs_after_batch(self, state):
        self.steps += state.experience_index >= 1

    @hookimpl
    def cfs_loss(self, state):
        if state.experience_index == 0:
            return None
        params = self.params(state)

        def compute():
            self.after_backward.append(all(p.grad is not None for p in params))
            with torch.no_grad():
                diff = [p - a for p, a in zip(params, self.anchor)]
                return WEIGHT * sum((d**2).sum() for d in diff), diff

        return ClosedFormLoss.deferred(compute, params, alpha=2 * WEIGHT)


class ViaAccumulating(_Anchored):
    """The same term adding its gradient itself (value and gradient from one pass, as a fused
    kernel does); records whether the rest of the loss's gradients existed when it ran."""

    name = "anchored-accumulating"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.after_backward: list[bool] = []

    @hookimpl
    def cfs_loss(self, state):
        if state.experience_index == 0:
            return None
        params = self.params(state)

        def value():
            with torch.no_grad():
                return WEIGHT * sum(((p - a) ** 2).sum() for p, a in zip(params, self.anchor))

        def accumulate(targets, scale):
            self.after_backward.append(all(p.grad is not None for p in params))
            with torch.no_grad():
                for t, p, a in zip(targets, params, self.anchor):
                    t.add_((p - a) * (2 * WEIGHT) * (1.0 if scale is None else scale))
            return value()

        return ClosedFormLoss.accumulating(accumulate, value, params)


class NaNDeferred(Strategy):
    """A deferred closed-form term that is NaN at one step (experience 1, epoch 1, batch 2)."""

    name = "nan-deferred"
    compatibility = frozenset({"class-incremental"})

    @hookimpl
    def cfs_loss(self, state):
        bad = state.experience_index == 1 and state.epoch == 0 and state.step_in_epoch == 1
        params = [state.model.head.bias]
        return ClosedFormLoss.deferred(
            lambda: (torch.tensor(float("nan") if bad else 0.0), [torch.zeros_like(params[0])]), params)


class GradNorms(Strategy):
    """Records the gradient norm every ``cfs_after_backward`` sees."""

    name = "grad-norms"
    compatibility = frozenset({"class-incremental"})

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.norms: list[float] = []

    @hookimpl
    def cfs_after_backward(self, state):
        self.norms.append(float(torch.stack([p.grad.norm() for p in state.model.parameters()]).norm()))


class Plugin:
    @staticmethod
    @hookimpl
    def cfs_add_strategies(registry):
        for cls in (ViaAutograd, ViaClosedForm, ViaDeferred, ViaAccumulating, NaNDeferred, GradNorms):
            registry.add(cls)


def _run(spec: str, **config):
    return testing.run(spec, plugins=[Plugin], epochs=2, batch_size=16, lr=0.1, max_train_per_class=40, **config)


@pytest.mark.parametrize("closed_spec", ["anchored-closed", "anchored-deferred", "anchored-accumulating"])
def test_closed_form_term_trains_like_autograd_and_hooks_see_its_gradient(closed_spec):
    auto, closed = _run("anchored-autograd+grad-norms"), _run(f"{closed_spec}+grad-norms")
    for a, c in zip(auto.state.model.parameters(), closed.state.model.parameters()):
        assert torch.allclose(a, c, atol=1e-5)
    norms_a = auto.state.strategy("grad-norms").norms
    norms_c = closed.state.strategy("grad-norms").norms
    assert norms_a == pytest.approx(norms_c, rel=1e-4)
    losses_a = [e.loss for e in auto.timings.epochs]
    losses_c = [e.loss for e in closed.timings.epochs]
    assert losses_a == pytest.approx(losses_c, rel=1e-4)  # the logged loss includes the term's value
    # and the term mattered: without it the run ends elsewhere
    plain = _run("finetune+grad-norms")
    assert not torch.allclose(plain.state.model.backbone.net[1].weight, closed.state.model.backbone.net[1].weight,
                              atol=1e-3)


def test_add_gradient_scales_fills_missing_grads_and_respects_grown_rows():
    p = torch.zeros(4, 2, requires_grad=True)
    q = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(4, 2)
    term = ClosedFormLoss(torch.tensor(1.0), [p, q], [torch.full((2, 2), 2.0), torch.full((3,), 1.0)],
                          rows=[2, None], factors=[torch.full((2, 2), 0.5), torch.full((3,), 4.0)], alpha=3.0)
    term.add_gradient(scale=torch.tensor(10.0))
    assert torch.equal(p.grad[:2], torch.full((2, 2), 1.0 + 10 * 3 * 2.0 * 0.5))
    assert torch.equal(p.grad[2:], torch.ones(2, 2))  # rows added since: untouched
    assert torch.equal(q.grad, torch.full((3,), 10 * 3 * 1.0 * 4.0))  # no grad before: created
    assert term.item() == 1.0


def test_a_deferred_term_is_computed_once_per_step_after_backward():
    strategy = _run("anchored-deferred+grad-norms").state.strategy("anchored-deferred")
    assert strategy.steps > 0 and len(strategy.after_backward) == strategy.steps
    assert all(strategy.after_backward)  # the rest of the loss had been back-propagated


def test_a_deferred_term_computes_once_whoever_asks_first():
    """``on_nan: skip-batch`` reads the value before ``backward``; the gradient is then not
    computed again."""
    calls = []
    p = torch.zeros(2, requires_grad=True)

    def compute():
        calls.append(p.grad is None)
        return torch.tensor(float("nan")), [torch.ones(2)]

    term = ClosedFormLoss.deferred(compute, [p], alpha=3.0)
    assert torch.isnan(term.value) and calls == [True]
    term.add_gradient()
    assert calls == [True] and torch.equal(p.grad, torch.full((2,), 3.0))


def test_an_accumulating_term_adds_its_gradient_after_backward_and_scales_it():
    strategy = _run("anchored-accumulating+grad-norms").state.strategy("anchored-accumulating")
    assert strategy.after_backward and all(strategy.after_backward)
    p = torch.zeros(2, requires_grad=True)
    seen = []

    def accumulate(targets, scale):
        seen.append(scale)
        targets[0].add_(torch.ones(2) * scale)
        return torch.tensor(5.0)

    term = ClosedFormLoss.accumulating(accumulate, lambda: torch.tensor(4.0), [p])
    assert term.value.item() == 4.0  # asked first (skip-batch): the value alone
    term.add_gradient(scale=torch.tensor(3.0))
    assert torch.equal(p.grad, torch.full((2,), 3.0)) and term.value.item() == 4.0 and len(seen) == 1
    fresh = ClosedFormLoss.accumulating(accumulate, lambda: torch.tensor(4.0), [p])
    fresh.add_gradient(scale=torch.tensor(1.0))
    assert fresh.value.item() == 5.0  # computed with the gradient


def test_skip_batch_skips_a_step_whose_deferred_value_is_not_finite():
    result = _run("anchored-deferred+nan-deferred", on_nan="skip-batch")
    assert result.state.extra["skipped_batches"] == 1
