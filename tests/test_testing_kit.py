"""The conformance kit itself: mtlkit's built-ins pass it, and each deliberately broken component
fails exactly the check that names its defect, with a message that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.builtin.classification import ClassificationTask
from mtlkit.builtin.mlp import MLPBackbone
from mtlkit.builtin.synthetic import SyntheticData
from mtlkit.builtin.weighters import EqualWeighter, StaticWeighter
from mtlkit.data import DataModule, DataSplits, InMemoryDataset
from mtlkit.testing import (
    Check,
    SkipCheck,
    WeighterTraits,
    backbone_checks,
    check_backbone,
    check_datamodule,
    check_task,
    check_weighter,
    datamodule_checks,
    parametrize_checks,
    registered,
    task_checks,
    weighter_checks,
)
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput, weighted_sum


def failure(checks: Sequence[Check], suffix: str) -> str:
    """The message of the one check whose id ends with ``suffix``; it must fail."""
    (check,) = [c for c in checks if c.id.endswith(suffix)]
    with pytest.raises(AssertionError) as info:
        check()
    message = str(info.value)
    assert message.startswith(check.id + ": "), message
    return message


def passes(checks: Sequence[Check], suffix: str) -> None:
    for check in [c for c in checks if c.id.endswith(suffix)]:
        check()


# --- what passes -----------------------------------------------------------------------------


def test_builtins_conform() -> None:
    check_weighter(EqualWeighter, num_tasks=(1, 2, 3))
    check_weighter(StaticWeighter, [lambda names: {"weights": {n: 1.0 + i for i, n in
                                                                enumerate(names)}}])
    check_task(ClassificationTask, [{}, {"hidden_dim": 8, "label_smoothing": 0.1}])
    check_backbone(MLPBackbone, [{"in_features": 6, "hidden": [8, 4]}])
    check_datamodule(SyntheticData(SyntheticData.Options(num_samples=40, missing_fraction=0.3)),
                     ["a", "b"])


def test_parametrize_checks_names_each_test_by_check_id() -> None:
    checks = weighter_checks(EqualWeighter, num_tasks=(2,))
    mark = parametrize_checks(checks)
    assert mark.args[0] == "check" and list(mark.args[1]) == checks
    assert mark.kwargs["ids"] == [c.id for c in checks]
    assert {"EqualWeighter-ddp", "EqualWeighter-heads", "EqualWeighter-resume-T2"} <= {
        c.id for c in checks
    }


def test_registered_reads_the_registry_and_refuses_an_empty_answer() -> None:
    assert registered("weighters", "mtlkit")["equal"] is EqualWeighter
    with pytest.raises(AssertionError, match="no-such-dist registers no weighters"):
        registered("weighters", "no-such-dist")


def test_importing_mtlkit_imports_neither_torch_nor_the_kit() -> None:
    code = "import sys, mtlkit; print('torch' in sys.modules, 'mtlkit.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- broken weighters ------------------------------------------------------------------------


class NegativeHeads(Weighter):
    """A gradient method that tells the heads to ascend their own losses."""

    needs = Needs(grads="parameters")

    def combine(self, inp: WeighterInput) -> Update:
        assert inp.grads is not None
        w = self.record(torch.ones(self.num_tasks))
        return Update(weights=w, grad=inp.grads.sum(0), head_weights=-torch.ones(self.num_tasks))


class Ascending(Weighter):
    """A loss method with negative weights: every head climbs its loss."""

    def combine(self, inp: WeighterInput) -> Update:
        w = self.record(-torch.ones(self.num_tasks))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))


class Mutating(Weighter):
    """Scales the caller's gradients in place even when they are not scratch."""

    needs = Needs(grads="parameters")

    def combine(self, inp: WeighterInput) -> Update:
        assert inp.grads is not None
        inp.grads.mul_(0.5)
        return Update(weights=self.record(torch.full((self.num_tasks,), 0.5)),
                      grad=inp.grads.sum(0))


class BlowsUpOnTinyLosses(Weighter):
    """``1 / (L - L.min())``: infinite at the smallest loss."""

    def combine(self, inp: WeighterInput) -> Update:
        losses = inp.losses.detach()
        w = self.record(1.0 / (losses - losses.min()))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))


class ForgetfulCounter(Weighter):
    """Weights follow a step count kept in a plain attribute, outside ``state_dict``."""

    def __init__(self, task_names: Sequence[str], options: Any = None) -> None:
        super().__init__(task_names, options)
        self.count = 0

    def combine(self, inp: WeighterInput) -> Update:
        self.count += 1
        w = self.record(torch.full((self.num_tasks,), 1.0 / self.count))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))


class _Opaque:
    pass


class UnpicklableState(EqualWeighter):
    """Puts an arbitrary object in its state: ``torch.load(weights_only=True)`` refuses it."""

    def get_extra_state(self) -> Any:
        return _Opaque()

    def set_extra_state(self, state: Any) -> None:
        pass


class OrderDependent(Weighter):
    """Weights by task position, not by task: relabelling the tasks does not permute them."""

    def combine(self, inp: WeighterInput) -> Update:
        w = self.record(torch.arange(1, self.num_tasks + 1, dtype=torch.float32))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))


class DeclaredOrderDependent(OrderDependent):
    conformance_traits: ClassVar[dict[str, Any]] = {"equivariant_max_tasks": 1}


class GlobalRandom(Weighter):
    """Draws its weights from torch's global generator: ranks disagree, resumes diverge."""

    def combine(self, inp: WeighterInput) -> Update:
        w = self.record(torch.softmax(torch.randn(self.num_tasks), 0))
        return Update(weights=w, loss=weighted_sum(w, inp.losses))


def test_negative_head_weights_fail_the_head_check() -> None:
    message = failure(weighter_checks(NegativeHeads), "-heads")
    assert "WeighterError" in message and "negative" in message
    assert "head_weights must be finite, >= 0" in failure(weighter_checks(NegativeHeads),
                                                          "-finite-T2")
    assert "trained against its own loss" in failure(weighter_checks(Ascending), "-heads")


def test_mutating_a_callers_gradients_fails_the_inputs_check() -> None:
    message = failure(weighter_checks(Mutating), "-inputs-T2")
    assert "modified WeighterInput.grads although grads_scratch was False" in message


def test_non_finite_output_fails_the_finite_check() -> None:
    message = failure(weighter_checks(BlowsUpOnTinyLosses), "-finite-T3")
    assert "non-finite weights" in message


def test_state_outside_state_dict_fails_resume() -> None:
    checks = weighter_checks(ForgetfulCounter)
    assert "differs from the uninterrupted run" in failure(checks, "-resume-T2")
    passes(checks, "-state-T2")  # the state_dict itself round-trips; it just lacks the counter


def test_state_that_weights_only_refuses_fails_the_state_check() -> None:
    message = failure(weighter_checks(UnpicklableState), "-state-T2")
    assert "weights_only=True" in message


def test_order_dependence_must_be_declared() -> None:
    assert "WeighterTraits.equivariant_max_tasks" in failure(
        weighter_checks(OrderDependent), "-equivariant-T2"
    )
    for checks in (
        weighter_checks(OrderDependent, traits=WeighterTraits(equivariant_max_tasks=1)),
        weighter_checks(OrderDependent, traits=lambda options: {"equivariant_max_tasks": 0}),
        weighter_checks(DeclaredOrderDependent),  # the class attribute
    ):
        (check,) = [c for c in checks if c.id.endswith("-equivariant-T2")]
        with pytest.raises(SkipCheck, match="up to T="):
            check()


def test_global_randomness_fails_the_ddp_declaration() -> None:
    assert "global random generator" in failure(weighter_checks(GlobalRandom), "-ddp")


def test_check_weighter_lists_every_failure() -> None:
    with pytest.raises(AssertionError) as info:
        check_weighter(Mutating, num_tasks=(2,))
    message = str(info.value)
    assert message.startswith("weighter Mutating: ") and "checks failed" in message
    assert "- Mutating-inputs-T2: " in message


def test_invalid_needs_fail_the_ddp_declaration() -> None:
    class BadNeeds(EqualWeighter):
        needs = Needs(grads="everything")  # type: ignore[arg-type]

    assert "grads='everything'" in failure(weighter_checks(BadNeeds), "-ddp")


# --- broken tasks ------------------------------------------------------------------------------


class NaNWhenUnlabelled(ClassificationTask):
    """Divides by the labelled count without a floor: 0/0 on a batch without labels."""

    def loss(self, output: Any, target: Tensor) -> Tensor:
        mask = self.labelled_mask(target)
        per_sample = self.per_sample_loss(output, self.fill_missing(target, mask))
        return (per_sample * mask).sum() / mask.sum()


class WrongMetrics(ClassificationTask):
    def metrics(self) -> list[Any]:
        return [*super().metrics(), type(super().metrics()[0])("top5")]


class BatchLoss(ClassificationTask):
    def per_sample_loss(self, output: Tensor, target: Tensor) -> Tensor:
        return super().per_sample_loss(output, target).mean()


def test_nan_on_an_unlabelled_batch_fails_the_missing_label_check() -> None:
    message = failure(task_checks(NaNWhenUnlabelled), "-missing-labels")
    assert "a batch without labels gave loss nan, expected exactly 0 (never NaN)" in message


def test_undeclared_or_missing_metrics_fail_the_metrics_check() -> None:
    message = failure(task_checks(WrongMetrics), "-metrics")
    assert "declares ['top5'] but new_meter().compute() returned only" in message


def test_a_batch_loss_fails_the_per_sample_check() -> None:
    assert "expected (8,)" in failure(task_checks(BatchLoss), "-per-sample-loss")


# --- broken data and backbones -----------------------------------------------------------------


class Leaky(DataModule):
    """Person 3 is in both train and test; augmentation draws from the global generator."""

    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        def part(people: list[int]) -> InMemoryDataset:
            n = len(people)
            return InMemoryDataset(
                inputs=torch.arange(n * 4, dtype=torch.float32).view(n, 4),
                targets={t: torch.zeros(n, dtype=torch.long) for t in tasks},
                meta={"person": torch.tensor(people)},
                augment=lambda x, gen: x + torch.randn(x.shape),
            )

        return DataSplits(train=part([0, 1, 2, 3]), test=part([3, 4]), group_key="person",
                          info={t: {"num_classes": 2} for t in tasks})


def test_a_group_on_both_sides_fails_the_groups_check() -> None:
    checks = datamodule_checks(Leaky(), ["a"])
    assert "1 person group(s) are in both train and test, e.g. [3]" in failure(checks, "-groups")
    assert "same generator differ" in failure(checks, "-augment")
    passes(checks, "-splits")


class WrongWidth(Backbone):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.lin = nn.Linear(3, 5)

    @property
    def feature_dim(self) -> int:
        return 4

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)

    def data_config(self) -> dict[str, Any]:
        return {"input_size": (3,), "std": (0.0,)}


def test_a_wrong_feature_dim_fails_the_features_check() -> None:
    checks = backbone_checks(WrongWidth)
    assert "expected (2, 4) (feature_dim 4)" in failure(checks, "-features")
    assert "std must be > 0" in failure(checks, "-data-config")
    passes(checks, "-last-shared")
