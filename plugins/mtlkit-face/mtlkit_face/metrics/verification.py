"""Face verification on pairs: pair sampling, person-disjoint threshold accuracy, AUC, TAR@FAR.

Pure functions on numpy arrays (torch tensors are accepted and copied to numpy), so each can be
checked on hand-made scores and reused outside the trainer. Labels are booleans: True = same person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_FOLDS = 10
"""LFW's protocol: the threshold of each fold is chosen on the other nine, whose people differ."""


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
    sequences: Any | None = None,
) -> Pairs:
    """Balanced verification pairs: as many same-person as different-person pairs.

    ``min(max_pairs // 2, #positive, #negative)`` pairs of each kind are drawn uniformly without
    replacement; of the positives, ``cross_fraction`` have different expressions where the data
    has enough such pairs (the rest are same-expression, and each kind tops up the other when
    short). The result depends only on the arrays' contents and order and on ``seed``: callers
    that gather batches in any order should sort the samples first (e.g. by dataset index).

    ``sequences`` (one recording label per sample) restricts the positives to two images of one
    person from *different* recordings: two frames of one video are near-duplicates, and a pair
    of them says little about recognising a person. A sequence is identified by its name within
    the person (subject + sequence), so labels only need to be unique per subject. None: every
    same-person pair is a candidate (the all-pairs form; the draws are those of mtlkit before
    issue 23, so its pairs are unchanged).
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
    seq = None if sequences is None else as_numpy(sequences).astype(np.int64).reshape(-1)
    if seq is not None and len(seq) != n:
        raise ValueError(f"{n} subjects but {len(seq)} sequences")
    if not 0.0 <= cross_fraction <= 1.0:
        raise ValueError(f"cross_fraction must be in [0, 1], got {cross_fraction}")
    if n < 2 or max_pairs < 2:
        empty = np.zeros(0, np.int64)
        return Pairs(empty, empty, np.zeros(0, bool), np.zeros(0, bool))
    if seq is None:
        order, segments = _all_pair_segments(subj, expr)
    else:
        order, segments = cross_sequence_segments(subj, expr, seq)
    return _draw(order, expr[order], segments, max_pairs, cross_fraction, seed)


Segments = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Per kind of pair (same_expr, cross_expr, negative): ``(row, lo, hi)`` arrays, each entry
meaning the pairs ``(row, j)`` for ``lo <= j < hi``, in positions of the sorted order."""


def _all_pair_segments(subj: np.ndarray, expr: np.ndarray) -> tuple[np.ndarray, Segments]:
    """Every same-person pair is a positive: one segment per row and kind."""
    n = len(subj)
    # sorted by (subject, expression, position): each row's partners of one kind are a contiguous
    # range of later rows, which _row_ranges_sample draws from without listing every pair
    order = np.lexsort((np.arange(n), expr, subj))
    s, e = subj[order], expr[order]
    rows = np.arange(n, dtype=np.int64)
    subject_end = np.searchsorted(s, s, side="right").astype(np.int64)
    group_end = _run_ends((s, e))
    return order, {
        "same_expr": (rows, rows + 1, group_end),
        "cross_expr": (rows, group_end, subject_end),
        "negative": (rows, subject_end, np.full(n, n, np.int64)),
    }


def _run_ends(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """For sorted rows, the end (exclusive) of the run of rows equal to each on all ``keys``."""
    n = len(keys[0])
    new = np.zeros(n, bool)
    new[0] = True
    for k in keys:
        new[1:] |= k[1:] != k[:-1]
    run = np.cumsum(new)
    return np.searchsorted(run, run, side="right").astype(np.int64)


def cross_sequence_segments(
    subj: np.ndarray, expr: np.ndarray, seq: np.ndarray
) -> tuple[np.ndarray, Segments]:
    """The pair segments when a positive must join two different sequences of one person.

    Rows are sorted by (subject, expression, sequence, position). A row's same-expression
    partners in other sequences follow its own sequence's run up to the expression group's end;
    its cross-expression partners run to the subject's end, less the rows of its own sequence
    in later expression groups (only where a sequence spans several expressions).
    """
    n = len(subj)
    order = np.lexsort((np.arange(n), seq, expr, subj))
    s, e, q = subj[order], expr[order], seq[order]
    rows = np.arange(n, dtype=np.int64)
    subject_end = np.searchsorted(s, s, side="right").astype(np.int64)
    group_end = _run_ends((s, e))
    cell_end = _run_ends((s, e, q))
    owner, lo, hi = _cut_own_sequence(s, q, rows, group_end, subject_end, cell_end)
    return order, {
        "same_expr": (rows, cell_end, group_end),
        "cross_expr": (owner, lo, hi),
        "negative": (rows, subject_end, np.full(n, n, np.int64)),
    }


def _cut_own_sequence(
    s: np.ndarray,
    q: np.ndarray,
    rows: np.ndarray,
    start: np.ndarray,
    stop: np.ndarray,
    cell_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments ``[start, stop)`` per row with the later runs of the row's own (subject,
    sequence) cut out; one segment per row unless a sequence spans several expressions."""
    cell_starts = np.flatnonzero(np.concatenate([[True], cell_end[1:] != cell_end[:-1]]))
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a in cell_starts.tolist():
        blocks.setdefault((int(s[a]), int(q[a])), []).append((a, int(cell_end[a])))
    owners, los, his = [rows], [start], [stop]
    split = np.zeros(len(rows), bool)
    for cells in (c for c in blocks.values() if len(c) > 1):
        for m, (a, b) in enumerate(cells[:-1]):
            split[a:b] = True
            cuts = [(int(start[a]), int(stop[a]))]
            for x, y in cells[m + 1 :]:  # later expression groups of the same subject
                lo_, hi_ = cuts.pop()
                cuts += [(lo_, x), (y, hi_)]
            for lo_, hi_ in cuts:
                owners.append(np.arange(a, b, dtype=np.int64))
                los.append(np.full(b - a, lo_, np.int64))
                his.append(np.full(b - a, hi_, np.int64))
    keep = ~split
    owners[0], los[0], his[0] = rows[keep], start[keep], stop[keep]
    return np.concatenate(owners), np.concatenate(los), np.concatenate(his)


def _draw(
    order: np.ndarray,
    e: np.ndarray,
    segments: Segments,
    max_pairs: int,
    cross_fraction: float,
    seed: int,
) -> Pairs:
    """Draw the balanced sample from the segments (positions in ``order``; ``e``: sorted
    expressions)."""
    avail = {
        name: int(np.maximum(hi - lo, 0).sum()) for name, (_, lo, hi) in segments.items()
    }
    k_pos = min(max_pairs // 2, avail["same_expr"] + avail["cross_expr"], avail["negative"])
    k_cross = min(round(cross_fraction * k_pos), avail["cross_expr"])
    k_same = min(k_pos - k_cross, avail["same_expr"])
    k_cross = min(k_pos - k_same, avail["cross_expr"])
    want = {"cross_expr": k_cross, "same_expr": k_same, "negative": k_pos}

    rng = np.random.default_rng(seed)
    firsts, seconds, sames, crosses = [], [], [], []
    for name in ("cross_expr", "same_expr", "negative"):
        owner, lo, hi = segments[name]
        seg, c = _row_ranges_sample(lo, hi, want[name], rng)
        r = owner[seg]
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


def best_threshold(scores: Any, labels: Any, *, balanced: bool = False) -> tuple[float, float]:
    """The threshold maximising accuracy of ``score > threshold`` -> same; returns (t, accuracy).

    Candidates are the midpoints between consecutive distinct scores and +-inf (all same / all
    different), so the optimum is exact. Ties between equally good thresholds go to the middle
    one of them, which for a clean gap is the gap's midpoint. ``balanced``: both classes weigh
    the same (the mean of the two classes' accuracies), as on the balanced pairs the threshold
    will be applied to, whatever the mix of the pairs it is chosen on.
    """
    s, y = _scores_labels(scores, labels)
    if len(s) == 0:
        raise ValueError("best_threshold needs at least one pair")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    # integer weights (n_neg per positive, n_pos per negative) keep ties exact
    w_pos, w_neg = (max(n_neg, 1), max(n_pos, 1)) if balanced else (1, 1)
    values, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse, weights=w_pos * y.astype(np.float64), minlength=len(values))
    neg = np.bincount(inverse, weights=w_neg * (~y).astype(np.float64), minlength=len(values))
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
    return threshold, float(correct[k] / (pos.sum() + neg.sum()))


@dataclass(frozen=True)
class ThresholdCV:
    """Result of ``kfold_threshold_accuracy``: the mean and the per-fold details."""

    accuracy: float
    fold_accuracies: np.ndarray
    thresholds: np.ndarray


def fold_ids(labels: Any, num_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Stratified fold of each pair: positives, then negatives, dealt round-robin to the folds.

    Deterministic in the pairs' order (shuffle the pairs first for random folds); every fold
    gets an equal share, within one, of each class. At most one fold per pair. One person's
    pairs land in several folds, so a threshold is chosen on pairs of the people it then scores:
    the protocol of mtlkit before issue 23, kept to recompute its numbers; new results use
    ``person_disjoint_threshold_accuracy``.
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
    """K-fold threshold accuracy: each fold is scored at the threshold best on the others.

    ``folds`` (int per pair) defaults to ``fold_ids(labels, num_folds)``, round-robin over the
    pairs, which puts one person on both sides (the protocol before issue 23); pass person-
    disjoint folds, or use ``person_disjoint_threshold_accuracy``. The reported accuracy is the
    unweighted mean over folds, as in LFW's "mean +- std over 10 folds".
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


def subject_folds(subjects: np.ndarray, num_folds: int) -> np.ndarray:
    """Fold of each subject id in ``subjects``: the sorted distinct ids dealt round-robin to
    ``min(num_folds, #subjects)`` folds (deterministic, sizes within one)."""
    ids = np.unique(subjects)
    k = max(1, min(num_folds, len(ids)))
    return (np.searchsorted(ids, subjects) % k).astype(np.int64)


@dataclass(frozen=True)
class PersonDisjointCV:
    """Result of ``person_disjoint_threshold_accuracy``."""

    accuracy: float
    """Share of the scored pairs decided correctly."""
    pair_thresholds: np.ndarray
    """float ``[P]``: the threshold each pair was scored at (NaN: not scored)."""
    scored: int
    """Pairs scored: a pair is left out when the pairs avoiding its people's folds do not hold
    both a same-person and a different-person pair (too few people to choose a threshold)."""


def person_disjoint_threshold_accuracy(
    scores: Any,
    labels: Any,
    first_subjects: Any,
    second_subjects: Any,
    num_folds: int = DEFAULT_FOLDS,
) -> PersonDisjointCV:
    """Verification accuracy with no person on both sides of the threshold's choice (as LFW).

    The people are dealt to ``num_folds`` folds (``subject_folds``). A pair whose people are in
    folds ``f`` and ``g`` (``f == g`` for a same-person pair) is scored at the threshold most
    accurate on the pairs that touch neither fold, so the threshold never saw the pair's people.
    Leaving people out unbalances the classes of those pairs, so the threshold maximises their
    balanced accuracy (``best_threshold(balanced=True)``), as for the balanced pairs it scores.
    Where every pair lies within one fold this is LFW's 10-fold protocol; pairs across folds
    are kept (scored against the pairs of the remaining folds) so that no negative is lost.
    The accuracy is over the scored pairs, each counted once; check ``scored`` (with three
    people, a different-person pair leaves only one person to choose its threshold on).
    """
    s, y = _scores_labels(scores, labels)
    a = as_numpy(first_subjects).astype(np.int64).reshape(-1)
    b = as_numpy(second_subjects).astype(np.int64).reshape(-1)
    if not len(a) == len(b) == len(s):
        raise ValueError(f"{len(s)} scores but {len(a)} and {len(b)} subjects")
    if len(s) < 2:
        raise ValueError("threshold cross-validation needs at least two pairs")
    fold = subject_folds(np.concatenate([a, b]), num_folds)
    fa, fb = fold[: len(a)], fold[len(a) :]
    lo, hi = np.minimum(fa, fb), np.maximum(fa, fb)
    thresholds = np.full(len(s), np.nan)
    for f, g in sorted(set(zip(lo.tolist(), hi.tolist(), strict=True))):
        test = (lo == f) & (hi == g)
        train = (fa != f) & (fa != g) & (fb != f) & (fb != g)
        if y[train].any() and not y[train].all():
            thresholds[test] = best_threshold(s[train], y[train], balanced=True)[0]
    scored = ~np.isnan(thresholds)
    if not scored.any():
        raise ValueError("no pair can be scored: every pair shares a fold with all the others")
    correct = (s[scored] > thresholds[scored]) == y[scored]
    return PersonDisjointCV(float(correct.mean()), thresholds, int(scored.sum()))


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
