"""The verification protocols a split is scored under, and the metric names that say which.

``cross_sequence`` (the headline): positives are two images of one person from different
sequences (recordings), since two frames of one video are near-duplicates; ``all_pairs``: any
two images of one person, the pair set of mtlkit before issue 23. Both are scored with the
person-disjoint threshold cross-validation. A source whose samples carry no sequence reports
``all_pairs`` alone: no metric claims a protocol it could not apply.

The names never reuse the bare ``verification_accuracy`` of older runs, which means all pairs
with round-robin threshold folds (one person on both sides of the threshold's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtlkit_face.metrics.verification import (
    DEFAULT_FOLDS,
    best_threshold,
    cosine_scores,
    make_pairs,
    person_disjoint_threshold_accuracy,
    roc_auc,
    tar_at_far,
)

CROSS_SEQUENCE = "cross_sequence"
ALL_PAIRS = "all_pairs"
HEADLINE = CROSS_SEQUENCE
"""The protocol the headline verification numbers use."""
PAIR_PROTOCOLS = (CROSS_SEQUENCE, ALL_PAIRS)
"""Every protocol, the headline first."""
TAR_FAR = 1e-2
BASES = ("verification_accuracy", "verification_auc", "tar_at_far_1e-2", "num_pairs")
"""What each protocol records, as ``<base>_<protocol>``."""


def metric_name(base: str, protocol: str) -> str:
    """``("verification_auc", "all_pairs")`` -> ``"verification_auc_all_pairs"``."""
    return f"{base}_{protocol}"


@dataclass(frozen=True)
class PairSettings:
    """How pairs are drawn and scored (the ``face_identity`` task's options)."""

    max_pairs: int = 6000
    cross_fraction: float = 0.5
    seed: int = 0
    folds: int = DEFAULT_FOLDS


def protocols_for(sequences: np.ndarray | None) -> list[str]:
    """The protocols a split can be scored under: cross-sequence needs sequence labels."""
    return [ALL_PAIRS] if sequences is None else list(PAIR_PROTOCOLS)


def verification_metrics(
    embeddings: np.ndarray,
    subjects: np.ndarray,
    expressions: np.ndarray,
    sequences: np.ndarray | None,
    settings: PairSettings,
) -> tuple[dict[str, float], float | None]:
    """Each applicable protocol's metrics (named ``<base>_<protocol>``), and the decision
    threshold: the one most accurate on all pairs of the first protocol (cross-sequence where
    the samples carry sequences), None when it has no finite optimum or too few pairs. The
    accuracy is left out unless every pair can be scored person-disjointly (four people or more).

    ``sequences`` labels each sample's recording; they are compared only within a subject, so
    a sequence is identified by subject + sequence name, never by its number alone.
    """
    out: dict[str, float] = {}
    threshold: float | None = None
    for i, protocol in enumerate(protocols_for(sequences)):
        pairs = make_pairs(
            subjects,
            expressions,
            max_pairs=settings.max_pairs,
            cross_fraction=settings.cross_fraction,
            seed=settings.seed,
            sequences=sequences if protocol == CROSS_SEQUENCE else None,
        )
        out[metric_name("num_pairs", protocol)] = float(len(pairs))
        if len(pairs) < 2:
            continue
        scores = cosine_scores(embeddings, pairs.first, pairs.second)
        try:
            cv = person_disjoint_threshold_accuracy(
                scores, pairs.same, subjects[pairs.first], subjects[pairs.second], settings.folds
            )
        except ValueError:  # too few people: no pair can be scored
            cv = None
        if cv is not None and cv.scored == len(pairs):  # a partial score would be biased
            out[metric_name("verification_accuracy", protocol)] = cv.accuracy
        out[metric_name("verification_auc", protocol)] = roc_auc(scores, pairs.same)
        tar = tar_at_far(scores, pairs.same, TAR_FAR)
        if tar is not None:
            out[metric_name("tar_at_far_1e-2", protocol)] = tar
        if i == 0:
            t, _ = best_threshold(scores, pairs.same)
            threshold = t if np.isfinite(t) else None
    return out, threshold
