"""Properties every registered weighter has: finite output, permutation equivariance, exact
resume through ``state_dict``, and declared needs that match what it reads."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mtlkit.weighter import Weighter

from .conftest import NAMES, VARIANTS, FakeTrainer, make_weighter, roundtrip, variant_id

TASKS3 = ["alpha", "beta", "gamma"]


def _trainer(name: str, opts: dict[str, Any], tasks: list[str], perm: list[int] | None = None,
             **kw: Any) -> FakeTrainer:
    names = tasks if perm is None else [tasks[i] for i in perm]
    return FakeTrainer(make_weighter(name, names, **opts), len(tasks), perm=perm, **kw)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_weights_and_update_are_finite(variant: tuple[str, dict[str, Any]]) -> None:
    name, opts = variant
    for duplicate in (False, True):  # True: identical tasks, a singular Gram matrix
        trainer = _trainer(name, opts, TASKS3, duplicate=duplicate)
        for _ in range(7):  # crosses three epochs (DWA's formula kicks in)
            out = trainer.step()
            assert out.update.weights.shape == (3,)
            assert torch.isfinite(out.update.weights).all(), out.update.weights
            if out.update.grad is not None:
                assert torch.isfinite(out.update.grad).all()
            if out.update.loss is not None:
                assert torch.isfinite(out.update.loss)
            assert not out.update.weights.requires_grad
            # the weights are recorded for logging, and the returned ones are not a live view
            torch.testing.assert_close(trainer.weighter.weights, out.update.weights.float())
        outs = trainer.run(2)
        assert not torch.equal(outs[0].update.weights, outs[1].update.weights) or name in (
            "dwa", "dtp") or duplicate
        for p in trainer.params():
            assert torch.isfinite(p).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_permuting_the_tasks_permutes_the_weights(variant: tuple[str, dict[str, Any]]) -> None:
    name, opts = variant
    # PCGrad's projection order matters for T >= 3 when gradients conflict; with T = 2 every task
    # has a single other task and the method is exactly order-free.
    tasks = TASKS3[:2] if name == "pcgrad" else TASKS3
    perm = [1, 0] if len(tasks) == 2 else [2, 0, 1]
    base = _trainer(name, opts, tasks)
    permuted = _trainer(name, opts, tasks, perm=perm)
    for _ in range(6):  # in lockstep: Update.grad may live in the step's scratch buffer
        a, b = base.step(), permuted.step()
        torch.testing.assert_close(b.update.weights, a.update.weights[perm], rtol=2e-4, atol=1e-6)
        if a.update.grad is not None:
            torch.testing.assert_close(b.update.grad, a.update.grad, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("stop", [3, 4])  # mid-epoch and at an epoch boundary
def test_resume_continues_identically(variant: tuple[str, dict[str, Any]], stop: int) -> None:
    name, opts = variant
    full = _trainer(name, opts, TASKS3)
    reference = full.run(8)
    part = _trainer(name, opts, TASKS3)
    part.run(stop)
    state = part.state_dict()
    resumed = _trainer(name, opts, TASKS3)  # a fresh process: new weighter, new optimizer
    resumed.load_state_dict(state)
    continued = resumed.run(8 - stop)
    for a, b in zip(reference[stop:], continued):
        assert torch.equal(a.update.weights, b.update.weights), (a.update.weights, b.update.weights)
        assert torch.equal(a.losses, b.losses)
    for a, b in zip(full.params(), resumed.params()):
        assert torch.equal(a, b)
    for key, value in full.weighter.state_dict().items():
        other = resumed.weighter.state_dict()[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        else:
            assert value == other, key


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_state_dict_round_trips(variant: tuple[str, dict[str, Any]]) -> None:
    name, opts = variant
    trainer = _trainer(name, opts, TASKS3)
    trainer.run(5)
    state = roundtrip(trainer.weighter.state_dict())
    fresh = make_weighter(name, TASKS3, **opts)
    FakeTrainer(fresh, 3)  # setup() as the trainer would call it
    fresh.load_state_dict(state)
    after = fresh.state_dict()
    assert set(after) == set(state)
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


@pytest.mark.parametrize("name", NAMES)
def test_needs_are_declared_and_options_have_defaults(name: str) -> None:
    w = make_weighter(name, TASKS3)
    assert isinstance(w, Weighter)
    assert w.needs.grads in ("none", "representation", "parameters", "last_layer")
    assert type(w).__doc__ and type(w).__module__.startswith("mtlkit_weighters.")
    module_doc = __import__(type(w).__module__, fromlist=["x"]).__doc__ or ""
    assert any(year in module_doc for year in ("2012", "2018", "2019", "2020", "2021", "2022",
                                               "2023")), "each module cites its paper"
    w.Options()  # every option has a default


@pytest.mark.parametrize(("name", "grads"), [("mgda", "representation"),
                                             ("aligned_mtl", "representation"),
                                             ("imtl", "representation")])
def test_rep_option_switches_to_representation_gradients(name: str, grads: str) -> None:
    assert make_weighter(name, TASKS3).needs.grads == "parameters"
    assert make_weighter(name, TASKS3, rep=True).needs.grads == grads
    assert type(make_weighter(name, TASKS3)).needs.grads == "parameters"  # class default intact


def test_single_task_is_plain_training() -> None:
    for name in NAMES:
        trainer = _trainer(name, {}, ["only"])
        for out in trainer.run(3):
            assert torch.isfinite(out.update.weights).all(), name


GRADIENT_VARIANTS = [
    v for v in VARIANTS
    if make_weighter(v[0], TASKS3, **v[1]).needs.grads in ("parameters", "representation")
]
"""The variants that return a combined gradient (the others return a loss)."""


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS, ids=variant_id)
def test_scratch_gradients_are_reused_and_callers_gradients_are_not_touched(
    variant: tuple[str, dict[str, Any]],
) -> None:
    """Given the trainer's buffer as scratch, the combined gradient costs no new D-sized tensor;
    given a caller's own tensor, the weighter leaves it as it was. Both give the same update."""
    name, opts = variant
    out = FakeTrainer(make_weighter(name, TASKS3, **opts), 3).step()
    mine = out.inp.grads
    assert mine is not None
    # replay the same input twice on fresh weighters at the same state
    kept = mine.clone().add_(torch.linspace(-1, 1, mine.numel()).view_as(mine))
    results = []
    for scratch in (False, True):
        w = make_weighter(name, TASKS3, **opts)
        FakeTrainer(w, 3)  # setup() as the trainer would call it
        grads = kept.clone()
        inp = type(out.inp)(losses=out.inp.losses, features=out.inp.features, grads=grads,
                            step=out.inp.step, epoch=out.inp.epoch, metrics=out.inp.metrics,
                            grads_scratch=scratch)
        update = w.combine(inp)
        assert update.grad is not None
        if scratch:
            assert update.grad.data_ptr() == grads.data_ptr(), "result not written over row 0"
        else:
            assert torch.equal(grads, kept), "a caller's gradients were modified"
            assert update.grad.data_ptr() != grads.data_ptr()
        results.append(update.grad.clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
