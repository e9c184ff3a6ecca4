"""Missing labels: a task's loss averages over labelled samples, and is 0 with none."""

from __future__ import annotations

import torch

from mtlkit.builtin.classification import ClassificationTask
from mtlkit.task import MISSING_LABEL


def _task_and_head() -> tuple[ClassificationTask, torch.nn.Module]:
    task = ClassificationTask("t")
    head = task.build_head(8, {"num_classes": 3})
    return task, head


def test_all_missing_gives_zero_finite_loss_and_no_gradient() -> None:
    task, head = _task_and_head()
    x = torch.randn(5, 8)
    target = torch.full((5,), MISSING_LABEL)
    loss = task.loss(head(x), target)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    for p in head.parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0


def test_partial_labels_average_over_labelled_only() -> None:
    task, head = _task_and_head()
    x = torch.randn(6, 8)
    target = torch.tensor([0, 1, MISSING_LABEL, 2, MISSING_LABEL, 1])
    out = head(x)
    mask = target != MISSING_LABEL
    expected = torch.nn.functional.cross_entropy(out[mask], target[mask])
    torch.testing.assert_close(task.loss(out, target), expected)


def test_float_targets_use_nan_as_missing() -> None:
    class Reg(ClassificationTask):
        def per_sample_loss(self, output, target):  # type: ignore[override]
            return (output[:, 0] - target) ** 2

    task = Reg("r")
    out = torch.randn(3, 2, requires_grad=True)
    target = torch.tensor([float("nan"), 1.0, float("nan")])
    loss = task.loss(out, target)
    torch.testing.assert_close(loss, (out[1, 0] - 1.0) ** 2)
    all_nan = task.loss(out, torch.full((3,), float("nan")))
    assert all_nan.item() == 0.0


def test_step_metric_is_batch_accuracy() -> None:
    task, _ = _task_and_head()
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    target = torch.tensor([0, 1, 0, MISSING_LABEL])
    torch.testing.assert_close(task.step_metric(logits, target), torch.tensor(2 / 3))
