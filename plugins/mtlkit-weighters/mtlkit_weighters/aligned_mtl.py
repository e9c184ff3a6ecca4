"""Aligned-MTL: Senushkin, Patakin, Kuznetsov & Konushin, "Independent Component Alignment for
Multi-Task Learning", CVPR 2023 (arXiv 2305.19000).

The task gradients are aligned: the gradient matrix ``G`` (rows ``g_i``) is replaced by the
closest matrix with orthogonal, equal-norm rows, rescaled by the smallest singular value. With the
eigendecomposition ``G G^T = V diag(lambda) V^T`` (rank r, eigenvalues above
``max(lambda) * T * eps``),

    B = sigma V_r diag(lambda_r)^{-1/2} V_r^T,   w = B 1,   update = sum_i w_i g_i,

with ``sigma = sqrt(min lambda_r)`` (``scale: min``, the paper's choice), the median singular
value (``median``) or ``sqrt(mean lambda_r)`` (``rmse``). ``median`` is the authors' (and torchjd's)
``torch.median``: the LOWER of the two middle values when the rank is even, so at T = 2 it is the
smaller singular value (``G = [[1, 0], [0, 3]]`` gives the update ``[1, 1]``, where the average of
the middle values, numpy's median, would give ``[2, 2]``). ``rep: true`` is Aligned-MTL-UB (the
gradients w.r.t. the shared representation). The T x T eigendecomposition runs on the host, after
ONE copy of the Gram matrix to the CPU per step.

The coefficients ``w`` may be negative, even for T = 2 (``G = [[1, 0], [10, 1]]`` gives
``w = (0.893, -0.078)``): legitimate for the shared combination, never for a head.

With ``rep: true`` the Gram matrix is that of the FULL representation gradients ``[B, F]``, as
the authors' code (which aligns the flattened representation gradients); LibMTL's ``rep_grad``
sums them over the batch first (``[F]``), which gives other weights as soon as B > 1 (the two
samples of ``imtl.py``: w = [0.741, 0.771] here, [0.009, 0.095] summed, where the summed
gradients are nearly parallel). ``rep_batch: sum`` is LibMTL's form.

Heads: each task's own loss gradient, unscaled (``head_gradients = "own"``): the authors' code
(and LibMTL's) backpropagates every task's plain loss into its decoder and aligns the shared
gradients only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from mtlkit.weighter import Needs, WeighterInput
from mtlkit_weighters._common import GramWeighter, RepOptions
from mtlkit_weighters._solvers import to_device, to_host


class AlignedMTLOptions(RepOptions):
    scale: Literal["min", "median", "rmse"] = "min"
    """The common singular value of the aligned gradients (``median``: the lower middle value)."""


def aligned_weights(k: np.ndarray, scale: str = "min") -> np.ndarray:
    """Aligned-MTL's weights ``B 1`` from a host Gram matrix."""
    t = k.shape[0]
    lam, v = np.linalg.eigh((k + k.T) / 2)
    top = float(lam.max(initial=0.0))
    if not np.isfinite(top) or top <= 0:
        return np.ones(t)
    keep = lam > top * t * np.finfo(np.float32).eps
    lam_r, v_r = lam[keep], v[:, keep]
    sig = np.sqrt(lam_r)
    if scale == "min":
        sigma = float(sig.min())
    elif scale == "median":
        sigma = float(np.sort(sig)[(sig.size - 1) // 2])  # torch.median: the lower middle value
    else:
        sigma = float(np.sqrt(lam_r.mean()))
    b = sigma * (v_r / sig) @ v_r.T
    return b.sum(axis=0)


class AlignedMTLWeighter(GramWeighter):
    """Gradients aligned to an orthogonal, equal-norm system (Senushkin et al. 2023)."""

    Options = AlignedMTLOptions
    options: AlignedMTLOptions
    needs = Needs(grads="parameters")
    head_gradients = "own"

    def solve(self, k: Tensor, inp: WeighterInput) -> Tensor:
        (host,) = to_host(k)
        return to_device(aligned_weights(host, self.options.scale), k)
