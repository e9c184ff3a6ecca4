"""``rep_batch``: the Gram matrix of the whole representation gradients or of their batch sum
(LibMTL's ``rep_grad``), for every weighter with a ``rep`` path (issue 27, A6)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from .conftest import grads_input, make_weighter

REP = torch.tensor([[[1.0, 0.2], [0.1, 0.9]], [[0.3, 1.0], [0.8, -0.1]]])
"""Two tasks' gradients w.r.t. a representation of two samples: ``[T, B, F]``."""

OPTIONS = {"imtl": {"loss_balance": False}, "aligned_mtl": {}, "mgda": {}}


def test_imtl_weights_differ_between_the_two_forms() -> None:
    """IMTL on two samples: [0.492, 0.508] on the whole gradients, [0.477, 0.523] summed."""
    full = make_weighter("imtl", ["a", "b"], rep=True, loss_balance=False)
    summed = make_weighter("imtl", ["a", "b"], rep=True, loss_balance=False, rep_batch="sum")
    torch.testing.assert_close(full.combine(grads_input([1, 1], REP.clone())).weights,
                               torch.tensor([0.4917, 0.5083]), rtol=0, atol=1e-4)
    torch.testing.assert_close(summed.combine(grads_input([1, 1], REP.clone())).weights,
                               torch.tensor([0.4774, 0.5226]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_form_solves_on_its_gradients_and_combines_the_full_ones(name: str) -> None:
    """``flatten``: the weights of the flattened ``[T, B F]`` gradients; ``sum``: those of the
    batch-summed ``[T, F]`` gradients (LibMTL). Either way the update is ``sum_i w_i g_i`` of
    the per-sample gradients."""
    opts = OPTIONS[name]
    for form, plain in (("flatten", REP.reshape(2, -1)), ("sum", REP.sum(dim=1))):
        w = make_weighter(name, ["a", "b"], rep=True, rep_batch=form, **opts)
        out = w.combine(grads_input([1, 1], REP.clone()))
        ref = make_weighter(name, ["a", "b"], **opts).combine(grads_input([1, 1], plain))
        torch.testing.assert_close(out.weights, ref.weights)
        torch.testing.assert_close(out.grad, out.weights[0] * REP[0] + out.weights[1] * REP[1])


def test_rep_batch_needs_the_representation_path() -> None:
    with pytest.raises(pydantic.ValidationError, match="rep: true"):
        make_weighter("imtl", ["a", "b"], rep_batch="sum")
