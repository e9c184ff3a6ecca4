"""Face-identity head parts: embedding layer, cosine classifier, additive margins, center loss.

The head's forward never sees the target (so it scripts/exports like any model and runs unchanged
at evaluation); margins that depend on the target are applied to its cosines in the loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MarginKind = Literal["none", "cosface", "arcface"]
CentersKind = Literal["none", "moving_average", "learned"]

MARGIN_DEFAULTS: dict[str, float] = {"cosface": 0.35, "arcface": 0.5}
"""Margins of the CosFace (Wang et al. 2018) and ArcFace (Deng et al. 2019) papers."""

_SIN_EPS = 1e-6
"""Floor under 1 - cos^2 so the arcface sine has a finite gradient at cos = +-1."""


class CosineClassifier(nn.Module):
    """``scale * cos(embedding, W_k)`` with L2-normalised rows of ``W``, computed in float32.

    Runs outside autocast: bf16 cosines lose the precision the margins work at (0.35 of 30).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosines(self, x: Tensor) -> Tensor:
        """Cosine of every sample to every class weight, ``[B, K]`` in [-1, 1]."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.cosines(x) * self.scale


class FaceIdentityHead(nn.Module):
    """Features -> embedding (Linear, or the features themselves; [+ BatchNorm1d]) -> identity
    logits; optional class centres.

    Returns ``{"logits": [B, K], "embedding": [B, E]}`` plus ``"centers": [K, E]`` when center loss
    is on. ``moving_average`` centres are a buffer (checkpointed with the model, never seen by the
    optimizer, updated by the task after each step); ``learned`` centres are a parameter that the
    optimizer trains through the loss.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        *,
        embedding_dim: int | None = 128,
        embedding_bn: bool = True,
        cosine: bool = False,
        scale: float = 30.0,
        centers: CentersKind = "none",
    ) -> None:
        super().__init__()
        # None: the features are the embedding (a pretrained face network's own descriptor)
        self.embed: nn.Module = (
            nn.Identity() if embedding_dim is None else nn.Linear(feature_dim, embedding_dim)
        )
        embedding_dim = feature_dim if embedding_dim is None else embedding_dim
        self.bn: nn.Module = nn.BatchNorm1d(embedding_dim) if embedding_bn else nn.Identity()
        self.classifier: nn.Module = (
            CosineClassifier(embedding_dim, num_classes, scale)
            if cosine
            else nn.Linear(embedding_dim, num_classes)
        )
        self.centers: Tensor | None
        # zero init, as in the center-loss papers' code: centres follow the embeddings
        if centers == "learned":
            self.centers = nn.Parameter(torch.zeros(num_classes, embedding_dim))
        elif centers == "moving_average":
            self.register_buffer("centers", torch.zeros(num_classes, embedding_dim))
        else:
            self.register_parameter("centers", None)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        embedding = self.bn(self.embed(features))
        out = {"logits": self.classifier(embedding), "embedding": embedding}
        if self.centers is not None:
            out["centers"] = self.centers
        return out


def cosface_logits(cos: Tensor, target: Tensor, margin: float, scale: float) -> Tensor:
    """CosFace: ``scale * (cos - margin)`` for the target class, ``scale * cos`` elsewhere."""
    onehot = F.one_hot(target, cos.shape[-1]).to(cos.dtype)
    return scale * (cos - margin * onehot)


def arcface_logits(cos: Tensor, target: Tensor, margin: float, scale: float) -> Tensor:
    """ArcFace: ``scale * cos(theta + margin)`` for the target class, ``scale * cos`` elsewhere.

    Where ``theta + margin`` would pass pi (so cos would rise again), the target logit falls back
    to ``cos - margin * sin(margin)`` as in insightface: still strictly below ``cos``.
    """
    cos = cos.clamp(-1.0, 1.0)
    target_cos = cos.gather(1, target.unsqueeze(1))
    sin = torch.sqrt((1.0 - target_cos * target_cos).clamp_min(_SIN_EPS))
    phi = target_cos * math.cos(margin) - sin * math.sin(margin)
    phi = torch.where(
        target_cos > math.cos(math.pi - margin), phi, target_cos - margin * math.sin(margin)
    )
    return scale * cos.scatter(1, target.unsqueeze(1), phi)


def margin_logits(
    kind: MarginKind, cos: Tensor, target: Tensor, margin: float, scale: float
) -> Tensor:
    """Logits with the named additive margin on the target class (``none``: ``scale * cos``)."""
    if kind == "cosface":
        return cosface_logits(cos, target, margin, scale)
    if kind == "arcface":
        return arcface_logits(cos, target, margin, scale)
    return scale * cos


def center_loss(embedding: Tensor, centers: Tensor, target: Tensor) -> Tensor:
    """Per-sample ``0.5 * ||e - c_y||^2`` (Wen et al. 2016): pulls each class together."""
    diff = embedding - centers.index_select(0, target)
    return 0.5 * (diff * diff).sum(dim=1)


def center_sums(embedding: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums ``[K, E]`` and counts ``[K]`` of the embeddings (targets all valid)."""
    sums = torch.zeros(num_classes, embedding.shape[1], dtype=embedding.dtype,
                       device=embedding.device)
    sums.index_add_(0, target, embedding)
    counts = torch.bincount(target, minlength=num_classes).to(embedding.dtype)
    return sums, counts


@torch.no_grad()
def update_centers_(centers: Tensor, sums: Tensor, counts: Tensor, rate: float) -> Tensor:
    """Moving-average step ``c_j <- c_j - rate * (c_j - mean of class j's embeddings)``.

    This is the authors' update (``c_j -= (1 - alfa) * sum_i (c_j - e_i) / n_j``, their
    ``center_loss_alfa = 0.5`` giving ``rate = 0.5``); classes absent from the batch stay put.
    """
    seen = counts > 0
    means = sums / counts.clamp_min(1)[:, None]
    step = torch.where(seen[:, None], centers - means.to(centers.dtype), torch.zeros_like(centers))
    return centers.sub_(rate * step)
