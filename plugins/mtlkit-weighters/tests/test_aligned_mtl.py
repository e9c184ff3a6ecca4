"""Aligned-MTL against the authors' solver on raw gradient matrices (issue 27, A1)."""

from __future__ import annotations

import torch

from .conftest import grads_input, make_weighter


def test_median_scale_is_the_lower_middle_singular_value_at_two_tasks() -> None:
    """The authors take ``torch.median`` of the singular values, the lower of the two middle
    ones: G = [[1, 0], [0, 3]] aligns to the update [1, 1] (numpy's median gave [2, 2])."""
    w = make_weighter("aligned_mtl", ["a", "b"], scale="median")
    out = w.combine(grads_input([1, 1], torch.tensor([[1.0, 0.0], [0.0, 3.0]])))
    torch.testing.assert_close(out.grad, torch.tensor([1.0, 1.0]))


def test_median_scale_at_three_tasks_is_the_middle_singular_value() -> None:
    """An odd rank has one middle value: singular values 1, 2, 4 give sigma = 2."""
    grads = torch.diag(torch.tensor([1.0, 2.0, 4.0]))
    out = make_weighter("aligned_mtl", list("abc"), scale="median").combine(
        grads_input([1, 1, 1], grads)
    )
    torch.testing.assert_close(out.grad, torch.tensor([2.0, 2.0, 2.0]))
