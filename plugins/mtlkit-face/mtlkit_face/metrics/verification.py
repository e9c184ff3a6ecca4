"""Face verification on pairs: pair sampling, LFW-style 10-fold threshold accuracy, AUC, TAR@FAR.

Pure functions on numpy arrays (torch tensors are accepted and copied to numpy), so each can be
checked on hand-made scores and reused outside the trainer. Labels are booleans: True = same person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_FOLDS = 10
"""LFW's protocol: the threshold of each fold is chosen on the other nine."""


def as_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array-like; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass(frozen=True)
class Pairs:
    """Sampled pairs as positions into the arrays given to ``make_pairs``."""

    first: np.ndarray
    """int64 ``[P]``."""
    second: np.ndarray
    """int64 ``[P]``."""
    same: np.ndarray
    """bool ``[P]``: both images show the same person."""
    cross_expression: np.ndarray
    """bool ``[P]``: the two images carry different expressions."""

    def __len__(self) -> int:
        return len(self.first)


def _row_ranges_sample(
    lo: np.ndarray, hi: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct pairs ``(i, j)`` with ``lo[i] <= j < hi[i]``, uniformly, without listing all.

    The pairs are numbered row by row; ``k`` distinct numbers are drawn and decoded, so memory
    stays O(rows + k) even when there are billions of candidate pairs.
    """
    counts = np.maximum(hi - lo, 0).astype(np.int64)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    picks = np.sort(rng.choice(int(ends[-1]), size=k, replace=False)).astype(np.int64)
    rows = np.searchsorted(ends, picks, side="right")
    cols = lo[rows] + (picks - (ends[rows] - counts[rows]))
    return rows.astype(np.int64), cols.astype(np.int64)


def make_pairs(
    subjects: Any,
    expressions: Any | None = None,
    *,
    max_pairs: int = 6000,
    cross_fraction: float = 0.5,
    seed: int = 0,
) -> Pairs:
    """Balanced verification pairs: as many same-person as different-person pairs.

    ``min(max_pairs // 2, #positive, #negative)`` pairs of each kind are drawn uniformly without
    replacement; of the positives, ``cross_fraction`` have different expressions where the data
    has enough such pairs (the rest are same-expression, and each kind tops up the other when
    short). The result depends only on the arrays' contents and order and on ``seed``: callers
    that gather batches in any order should sort the samples first (e.g. by dataset index).
    """
    subj = as_numpy(subjects).astype(np.int64).reshape(-1)
    n = len(subj)
    expr = (
        np.zeros(n, np.int64)
        if expressions is None
        else as_numpy(expressions).astype(np.int64).reshape(-1)
    )
    if len(expr) != n:
        raise ValueError(f"{n} subjects but {len(expr)} expressions")
    if not 0.0 <= cross_fraction <= 1.0:
        raise ValueError(f"cross_fraction must be in [0, 1], got {cross_fraction}")
    empty = np.zeros(0, np.int64)
    if n < 2 or max_pairs < 2:
        return Pairs(empty, empty, np.zeros(0, bool), np.zeros(0, bool))

    # sorted by (subject, expression, position): each row's partners of one kind are a contiguous
    # range of later rows, which _row_ranges_sample draws from without listing every pair
    order = np.lexsort((np.arange(n), expr, subj))
    s, e = subj[order], expr[order]
    rows = np.arange(n, dtype=np.int64)
    subject_end = np.searchsorted(s, s, side="right").astype(np.int64)
    new_group = np.concatenate([[True], (s[1:] != s[:-1]) | (e[1:] != e[:-1])])
    group = np.cumsum(new_group)
    group_end = np.searchsorted(group, group, side="right").astype(np.int64)
    n_end = np.full(n, n, np.int64)
    ranges = {
        "same_expr": (rows + 1, group_end),
        "cross_expr": (group_end, subject_end),
        "negative": (subject_end, n_end),
    }
    avail = {name: int(np.maximum(hi - lo, 0).sum()) for name, (lo, hi) in ranges.items()}

    k_pos = min(max_pairs // 2, avail["same_expr"] + avail["cross_expr"], avail["negative"])
    k_cross = min(round(cross_fraction * k_pos), avail["cross_expr"])
    k_same = min(k_pos - k_cross, avail["same_expr"])
    k_cross = min(k_pos - k_same, avail["cross_expr"])
    want = {"cross_expr": k_cross, "same_expr": k_same, "negative": k_pos}

    rng = np.random.default_rng(seed)
    firsts, seconds, sames, crosses = [], [], [], []
    for name in ("cross_expr", "same_expr", "negative"):
        lo, hi = ranges[name]
        r, c = _row_ranges_sample(lo, hi, want[name], rng)
        firsts.append(order[r])
        seconds.append(order[c])
        sames.append(np.full(len(r), name != "negative"))
        crosses.append(e[r] != e[c])
    shuffle = rng.permutation(sum(len(f) for f in firsts))
    return Pairs(
        first=np.concatenate(firsts)[shuffle].astype(np.int64),
        second=np.concatenate(seconds)[shuffle].astype(np.int64),
        same=np.concatenate(sames)[shuffle].astype(bool),
        cross_expression=np.concatenate(crosses)[shuffle].astype(bool),
    )


def cosine_scores(embeddings: Any, first: Any, second: Any) -> np.ndarray:
    """Cosine similarity of each pair (rows are L2-normalised here; zero rows score 0)."""
    emb = as_numpy(embeddings).astype(np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    a, b = as_numpy(first).astype(np.int64), as_numpy(second).astype(np.int64)
    return np.einsum("ij,ij->i", emb[a], emb[b])


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(scores).astype(np.float64).reshape(-1)
    y = as_numpy(labels).astype(bool).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise ValueError("verification scores must be finite")
    return s, y


def best_threshold(scores: Any, labels: Any) -> tuple[float, float]:
    """The threshold maximising accuracy of ``score > threshold`` -> same; returns (t, accuracy).

    Candidates are the midpoints between consecutive distinct scores and +-inf (all same / all
    different), so the optimum is exact. Ties between equally good thresholds go to the middle
    one of them, which for a clean gap is the gap's midpoint.
    """
    s, y = _scores_labels(scores, labels)
    if len(s) == 0:
        raise ValueError("best_threshold needs at least one pair")
    values, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=y.astype(np.float64), minlength=len(values))
    neg = np.bincount(inverse, weights=(~y).astype(np.float64), minlength=len(values))
    # k = number of distinct values at or below the threshold (predicted "different")
    below_pos = np.concatenate([[0.0], np.cumsum(pos)])
    below_neg = np.concatenate([[0.0], np.cumsum(neg)])
    correct = (pos.sum() - below_pos) + below_neg
    best = np.flatnonzero(correct == correct.max())
    k = int(best[len(best) // 2])
    if k == 0:
        threshold = -math.inf
    elif k == len(values):
        threshold = math.inf
    else:
        threshold = float((values[k - 1] + values[k]) / 2)
    return threshold, float(correct[k] / len(s))


@dataclass(frozen=True)
class ThresholdCV:
    """Result of ``kfold_threshold_accuracy``: the mean and the per-fold details."""

    accuracy: float
    fold_accuracies: np.ndarray
    thresholds: np.ndarray


def fold_ids(labels: Any, num_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Stratified fold of each pair: positives, then negatives, dealt round-robin to the folds.

    Deterministic in the pairs' order (shuffle the pairs first for random folds); every fold
    gets an equal share, within one, of each class. At most one fold per pair.
    """
    y = as_numpy(labels).astype(bool).reshape(-1)
    k = max(1, min(num_folds, len(y)))
    folds = np.empty(len(y), np.int64)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    folds[pos] = np.arange(len(pos)) % k
    folds[neg] = (len(pos) + np.arange(len(neg))) % k
    return folds


def kfold_threshold_accuracy(
    scores: Any, labels: Any, num_folds: int = DEFAULT_FOLDS, folds: Any | None = None
) -> ThresholdCV:
    """LFW-style verification accuracy: each fold is scored at the threshold best on the others.

    ``folds`` (int per pair) defaults to ``fold_ids(labels, num_folds)``. The reported accuracy is
    the unweighted mean over folds, as in LFW's "mean +- std over 10 folds".
    """
    s, y = _scores_labels(scores, labels)
    if len(s) < 2:
        raise ValueError("threshold cross-validation needs at least two pairs")
    f = fold_ids(y, num_folds) if folds is None else as_numpy(folds).astype(np.int64).reshape(-1)
    if len(f) != len(s):
        raise ValueError(f"{len(s)} scores but {len(f)} fold ids")
    ids = np.unique(f)
    if len(ids) < 2:
        raise ValueError("threshold cross-validation needs at least two folds")
    accs, thresholds = [], []
    for fold in ids:
        test = f == fold
        t, _ = best_threshold(s[~test], y[~test])
        accs.append(float(((s[test] > t) == y[test]).mean()))
        thresholds.append(t)
    fold_acc = np.asarray(accs)
    return ThresholdCV(float(fold_acc.mean()), fold_acc, np.asarray(thresholds))


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic, ties counting one half.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(equal).
    """
    s, y = _scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative pair")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value: ties share the mean of their ranks
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]]) + 1
    avg_rank = first_rank + (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][y].sum())
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def min_negatives(far: float) -> int:
    """Negatives needed for a FAR of ``far`` to be measurable (at least one false accept)."""
    return math.ceil(1.0 / far - 1e-9)


def tar_at_far(scores: Any, labels: Any, far: float = 1e-2) -> float | None:
    """True-accept rate at the threshold where at most ``far`` of the negatives are accepted.

    The threshold is the negatives' upper ``far`` quantile (their ``floor(far * N) + 1``-th largest
    score; accept means ``score > threshold``). None when there are fewer than
    ``min_negatives(far)`` negatives (no false accept could be allowed) or no positives.
    """
    if not 0.0 < far <= 1.0:
        raise ValueError(f"far must be in (0, 1], got {far}")
    s, y = _scores_labels(scores, labels)
    neg = np.sort(s[~y])[::-1]
    pos = s[y]
    if len(neg) < min_negatives(far) or len(pos) == 0:
        return None
    k = math.floor(far * len(neg) + 1e-9)
    threshold = neg[k] if k < len(neg) else -math.inf
    return float((pos > threshold).mean())
