"""The unit's L2 normalisation against the authors' TensorFlow ``l2_normalize`` (issue 27, A5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mtlkit_dynamic.unit import DynamicWeightUnit, tf_l2_normalize


def _tf_l2_normalize(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """TF 1's ``tf.nn.l2_normalize(x, 1, eps)``: ``x * rsqrt(max(sum x^2, eps))``, in float64."""
    return x / np.sqrt(np.maximum((x * x).sum(axis=1, keepdims=True), eps))


def _unit() -> DynamicWeightUnit:
    """One feature, two tasks: a unit-length feature gives the logits (1, 0)."""
    unit = DynamicWeightUnit(1, 2, normalize=True)
    with torch.no_grad():
        unit.linear.weight.copy_(torch.tensor([[1.0], [0.0]]))
    return unit


@pytest.mark.parametrize("scale", [1e-8, 1e-6, 1e-5, 3e-5, 1.0, 1e3])
def test_normalisation_is_tensorflows(scale: float) -> None:
    """The epsilon floors the squared norm (1e-10), as in the authors' code, at every scale."""
    x = scale * torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(tf_l2_normalize(x).numpy(), _tf_l2_normalize(x.double().numpy()),
                               rtol=1e-6, atol=0)


def test_tiny_features_give_the_authors_weights() -> None:
    """A feature of norm 1e-6 is scaled by 1e5 (norm 0.1), not made unit length: the authors'
    [0.525, 0.475], where ``F.normalize`` gave [0.731, 0.269]."""
    weights = _unit()(torch.tensor([[1e-6]]))
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([0.1, -0.1])))
    torch.testing.assert_close(weights, torch.tensor([0.525, 0.475]), rtol=0, atol=1e-3)


def test_ordinary_features_are_unit_length() -> None:
    """Above a norm of 1e-5 nothing changes: the feature is normalised to unit length."""
    weights = _unit()(torch.tensor([[0.3]]))
    torch.testing.assert_close(weights, torch.sigmoid(torch.tensor([1.0, -1.0])))
