"""The one implementation of the gradient paths, called directly on a hand-made graph."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mtlkit.errors import ConfigError, WeighterError
from mtlkit.functional import WeightedStep
from mtlkit.gradient_paths import GradientPaths
from mtlkit.weighter import GradSource, Needs, Update, Weighter, WeighterInput

HEAD_WEIGHTS = torch.tensor([2.0, 3.0])


class _Fixed(Weighter):
    """Sums the task gradients, with head weights 2 and 3; ``shape`` breaks the combined one."""

    def __init__(self, grads: GradSource, shape: tuple[int, ...] | None = None) -> None:
        super().__init__(["a", "b"])
        self.needs = Needs(grads=grads)
        self.shape = shape

    def combine(self, inp: WeighterInput) -> Update:
        assert inp.grads is not None
        g = inp.grads.sum(0)
        if self.shape is not None:
            g = g.reshape(-1)[: self.shape[0]]
        return Update(weights=torch.ones(2), grad=g, head_weights=HEAD_WEIGHTS)


def _problem() -> tuple[nn.Parameter, nn.Parameter, nn.Parameter, nn.Parameter, Tensor]:
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4, generator=g))
    ha, hb = nn.Parameter(torch.randn(3, generator=g)), nn.Parameter(torch.randn(3, generator=g))
    both = nn.Parameter(torch.randn(3, generator=g))  # read by both tasks, not shared=
    return w, ha, hb, both, torch.randn(5, 4, generator=g)


def _losses(z: Tensor, ha: Tensor, hb: Tensor, both: Tensor) -> list[Tensor]:
    return [((z @ (ha + both)) ** 2).mean(), (z @ (hb * both)).sin().mean()]


@pytest.mark.parametrize("grads", ["parameters", "representation"])
def test_a_parameter_two_losses_reach_gets_both_weighted_gradients(grads: GradSource) -> None:
    w, ha, hb, both, x = _problem()
    z = torch.tanh(x @ w.T)
    la, lb = _losses(z, ha, hb, both)
    ga = torch.autograd.grad(la, [w, both], retain_graph=True)
    gb = torch.autograd.grad(lb, [w, both], retain_graph=True)
    paths = GradientPaths(_Fixed(grads), [w])
    paths([la, lb], [[ha, both], [hb, both]], needs=Needs(grads=grads), features=z)
    torch.testing.assert_close(both.grad, 2.0 * ga[1] + 3.0 * gb[1])
    torch.testing.assert_close(w.grad, ga[0] + gb[0])


def test_batched_backward_refuses_heads_that_overlap() -> None:
    w, ha, hb, both, x = _problem()
    z = torch.tanh(x @ w.T)
    paths = GradientPaths(_Fixed("parameters"), [w], batched=True)
    with pytest.raises(ValueError, match="disjoint"):
        paths(_losses(z, ha, hb, both), [[ha, both], [hb, both]],
              needs=Needs(grads="parameters"), features=z)


@pytest.mark.parametrize("grads", ["parameters", "representation"])
def test_a_combined_gradient_of_the_wrong_shape_is_refused(grads: GradSource) -> None:
    w, ha, hb, both, x = _problem()
    z = torch.tanh(x @ w.T)
    paths = GradientPaths(_Fixed(grads, shape=(5,)), [w])
    with pytest.raises(WeighterError, match=r"Update\.grad of shape"):
        paths(_losses(z, ha, hb, both), [[ha], [hb]], needs=Needs(grads=grads), features=z)


@pytest.mark.parametrize("grads", ["parameters", "representation"])
def test_a_loss_without_a_graph_gets_a_zero_row(grads: GradSource) -> None:
    """A task with no labelled sample in the batch may give a constant loss: its row is zero and
    the other task still trains."""
    w, ha, hb, _both, x = _problem()
    z = torch.tanh(x @ w.T)
    la = ((z @ ha) ** 2).mean()
    (ga,) = torch.autograd.grad(la, [w], retain_graph=True)
    seen = {}

    class _Spy(_Fixed):
        def combine(self, inp: WeighterInput) -> Update:
            seen["grads"] = inp.grads.clone()
            return super().combine(inp)

    GradientPaths(_Spy(grads), [w])([la, torch.zeros(())], [[ha], [hb]],
                                    needs=Needs(grads=grads), features=z)
    assert float(seen["grads"][1].abs().sum()) == 0.0
    torch.testing.assert_close(w.grad, ga)
    assert hb.grad is None


def test_features_the_losses_do_not_read_are_named_when_required() -> None:
    w, ha, hb, _both, x = _problem()
    z = torch.tanh(x @ w.T)
    other = torch.tanh(x @ w.T)
    paths = GradientPaths(_Fixed("representation"), [w], require_features=True)
    with pytest.raises(ConfigError, match="does not depend on the features"):
        paths([((other @ ha) ** 2).mean(), ((other @ hb) ** 2).mean()], [[ha], [hb]],
              needs=Needs(grads="representation"), features=z)


def test_weighted_step_keeps_one_task_gradient_buffer() -> None:
    """The functional path fills the engine's preallocated [T, D] buffer through .grad views:
    the same buffer every step, and .grad of the shared parameters is never a view of it."""
    w, ha, hb, _both, x = _problem()
    step = WeightedStep(_Fixed("parameters"), shared=[w])
    buffers = []
    for _ in range(2):
        for p in (w, ha, hb):
            p.grad = None
        z = torch.tanh(x @ w.T)
        step.backward(_losses(z, ha, hb, torch.ones(3)), features=z)
        buffers.append(step.paths._buffer)
        assert w.grad is not None
        assert w.grad.untyped_storage().data_ptr() != buffers[-1].untyped_storage().data_ptr()
    assert buffers[0] is buffers[1]
