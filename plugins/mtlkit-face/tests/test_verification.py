"""Verification metrics on hand-made scores and pair sampling on hand-made subject layouts."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from mtlkit_face.metrics.verification import (
    best_threshold,
    cosine_scores,
    fold_ids,
    kfold_threshold_accuracy,
    make_pairs,
    min_negatives,
    person_disjoint_threshold_accuracy,
    roc_auc,
    subject_folds,
    tar_at_far,
)

SEPARATED = (np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3]), np.array([1, 1, 1, 0, 0, 0], bool))


def test_perfect_separation_gives_accuracy_one_and_auc_one() -> None:
    scores, labels = SEPARATED
    t, acc = best_threshold(scores, labels)
    assert acc == 1.0 and t == pytest.approx(0.5)  # the gap's midpoint
    assert kfold_threshold_accuracy(scores, labels).accuracy == 1.0
    assert roc_auc(scores, labels) == 1.0


def test_reversed_scores_give_auc_zero() -> None:
    scores, labels = SEPARATED
    assert roc_auc(-scores, labels) == 0.0
    assert roc_auc(torch.tensor(-scores), torch.tensor(labels)) == 0.0  # torch accepted


def test_auc_counts_ties_as_half() -> None:
    # pos {0.5, 0.7} vs neg {0.5, 0.1}: wins 1 + 1 + 1, one tie -> 3.5 / 4
    scores = np.array([0.5, 0.7, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0], bool)
    assert roc_auc(scores, labels) == pytest.approx(0.875)
    assert roc_auc(np.zeros(6), np.array([1, 0, 1, 0, 1, 0], bool)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc(scores, np.ones(4, bool))


def test_best_threshold_on_a_known_example() -> None:
    # sorted: .1n .35n .4p .6n .8p .9p; 5/6 correct at t = .375 and at t = .7: the later is kept
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9])
    labels = np.array([0, 1, 0, 1, 0, 1], bool)
    t, acc = best_threshold(scores, labels)
    assert t == pytest.approx(0.7)
    assert acc == pytest.approx(5 / 6)
    # all one class: the extreme threshold that accepts (or rejects) everything
    assert best_threshold([0.2, 0.3], [True, True]) == (-math.inf, 1.0)
    assert best_threshold([0.2, 0.3], [False, False]) == (math.inf, 1.0)


def test_threshold_cross_validation_on_a_known_example() -> None:
    # three folds of one positive and one negative each
    scores = np.array([0.8, 0.3, 0.6, 0.5, 0.45, 0.7])
    labels = np.array([1, 0, 1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1, 2, 2])
    cv = kfold_threshold_accuracy(scores, labels, folds=folds)
    # fold 0: trained on the others, t = .55 -> both right; fold 1: t = .75 -> .6 rejected;
    # fold 2: t = .55 -> .45 rejected and .7 accepted, both wrong
    np.testing.assert_allclose(cv.thresholds, [0.55, 0.75, 0.55])
    np.testing.assert_allclose(cv.fold_accuracies, [1.0, 0.5, 0.0])
    assert cv.accuracy == pytest.approx(0.5)
    # the in-sample optimum (5/6) is optimistic; the CV estimate is not
    assert best_threshold(scores, labels)[1] > cv.accuracy


def test_fold_ids_are_stratified() -> None:
    labels = np.array([1] * 30 + [0] * 30, bool)
    folds = fold_ids(labels, 10)
    for f in range(10):
        assert (labels[folds == f]).sum() == 3 and (~labels[folds == f]).sum() == 3
    assert set(fold_ids(np.array([1, 0, 1], bool), 10)) == {0, 1, 2}  # never an empty fold
    with pytest.raises(ValueError, match="two pairs"):
        kfold_threshold_accuracy([0.1], [True])


def test_tar_at_far_uses_the_negatives_quantile() -> None:
    neg = np.arange(100) / 100.0  # 0.00 .. 0.99: one false accept allowed -> threshold 0.98
    pos = np.array([0.985, 0.99, 0.5, 1.0])
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(4, bool), np.zeros(100, bool)])
    assert tar_at_far(scores, labels, 1e-2) == pytest.approx(0.75)
    assert min_negatives(1e-2) == 100
    assert tar_at_far(scores[:-1], labels[:-1], 1e-2) is None  # 99 negatives: not measurable


def test_cosine_scores() -> None:
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosine_scores(emb, [0, 0, 0], [1, 2, 3]), [1.0, 0.0, 0.0])


def _grid(subjects: int, expressions: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    subj = np.repeat(np.arange(subjects), expressions * frames)
    expr = np.tile(np.repeat(np.arange(expressions), frames), subjects)
    return subj, expr


def test_pairs_are_balanced_valid_and_half_across_expressions() -> None:
    subj, expr = _grid(4, 4, 5)  # per person: 40 same-expression and 150 cross pairs
    pairs = make_pairs(subj, expr, max_pairs=200, seed=3)
    assert len(pairs) == 200 and pairs.same.sum() == 100
    np.testing.assert_array_equal(subj[pairs.first] == subj[pairs.second], pairs.same)
    np.testing.assert_array_equal(expr[pairs.first] != expr[pairs.second], pairs.cross_expression)
    assert pairs.cross_expression[pairs.same].sum() == 50
    assert (pairs.first != pairs.second).all()
    keys = {tuple(sorted(p)) for p in zip(pairs.first.tolist(), pairs.second.tolist())}
    assert len(keys) == len(pairs)  # no pair twice
    again = make_pairs(subj, expr, max_pairs=200, seed=3)
    np.testing.assert_array_equal(pairs.first, again.first)  # deterministic in the seed


def test_pairs_fall_back_when_cross_expression_pairs_are_short() -> None:
    subj, expr = _grid(3, 1, 4)  # one expression only: every positive is same-expression
    pairs = make_pairs(subj, expr, max_pairs=1000)
    assert pairs.same.sum() == 18 == (~pairs.same).sum()  # all 3 * C(4, 2) positives
    assert not pairs.cross_expression.any()
    assert len(make_pairs([0, 0, 0], [0, 1, 2])) == 0  # one person: no negative pair
    assert len(make_pairs([5], [0])) == 0


def test_pairs_scale_without_listing_every_pair() -> None:
    subj = np.repeat(np.arange(4), 50_000)  # ~5e9 positive candidates
    expr = np.tile(np.arange(7), 200_000 // 7 + 1)[:200_000]
    t0 = time.perf_counter()
    pairs = make_pairs(subj, expr, max_pairs=6000)
    assert len(pairs) == 6000
    assert pairs.cross_expression[pairs.same].mean() == pytest.approx(0.5)
    assert time.perf_counter() - t0 < 2.0


# --- cross-sequence positives (issue 23) ---------------------------------------------------------
def _brute(subj: np.ndarray, seq: np.ndarray) -> tuple[set, set]:
    """Every cross-sequence positive and every negative, listed."""
    n = len(subj)
    ij = [(i, j) for i in range(n) for j in range(i + 1, n)]
    pos = {(i, j) for i, j in ij if subj[i] == subj[j] and seq[i] != seq[j]}
    return pos, {(i, j) for i, j in ij if subj[i] != subj[j]}


def _drawn(pairs) -> tuple[set, set]:
    keys = [tuple(sorted(p)) for p in zip(pairs.first.tolist(), pairs.second.tolist())]
    same = pairs.same.tolist()
    return {k for k, s in zip(keys, same) if s}, {k for k, s in zip(keys, same) if not s}


def test_cross_sequence_positives_never_join_two_frames_of_one_sequence() -> None:
    """Three people, two sequences each (numbered 0 and 1 for every person, as CK+ numbers them
    per subject), four frames per sequence: 16 cross-sequence positives per person, 12 not."""
    subj = np.repeat(np.arange(3), 8)
    seq = np.tile(np.repeat([0, 1], 4), 3)
    expr = seq.copy()  # one expression per sequence, as in CK+
    pairs = make_pairs(subj, expr, sequences=seq, max_pairs=10_000)
    pos, neg = _drawn(pairs)
    want_pos, want_neg = _brute(subj, seq)
    assert pos == want_pos and len(pos) == 3 * 16  # all of them, none within a sequence
    assert neg <= want_neg and len(neg) == len(pos)
    assert pairs.cross_expression[pairs.same].all()
    # the all-pairs form keeps the same-sequence positives
    assert _drawn(make_pairs(subj, expr, max_pairs=10_000))[0] > want_pos


def test_cross_sequence_positives_where_a_sequence_spans_expressions() -> None:
    """A manifest may label frames of one video with several expressions: those pairs are
    still one sequence, and are left out; every other positive stays available."""
    rng = np.random.default_rng(0)
    for seed in range(30):
        n = int(rng.integers(2, 60))
        subj = rng.integers(0, 4, n)
        expr = rng.integers(0, 3, n)
        seq = rng.integers(0, 3, n)
        pairs = make_pairs(subj, expr, sequences=seq, max_pairs=10_000, seed=seed)
        pos, neg = _drawn(pairs)
        want_pos, want_neg = _brute(subj, seq)
        assert len(pos) == min(len(want_pos), len(want_neg)) == len(neg)
        assert pos <= want_pos and neg <= want_neg


def test_sequence_count_must_match() -> None:
    with pytest.raises(ValueError, match="3 subjects but 2 sequences"):
        make_pairs([0, 0, 1], [0, 0, 0], sequences=[0, 1])


# --- person-disjoint threshold cross-validation (issue 23) -------------------------------------
def _people_pairs(people: int = 8, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Every within-person pair of 3 images and every cross-person pair, random scores."""
    rng = np.random.default_rng(seed)
    who = np.repeat(np.arange(people), 3)
    i, j = np.triu_indices(len(who), 1)
    a, b = who[i], who[j]
    same = a == b
    scores = np.where(same, 0.7, 0.3) + 0.1 * rng.standard_normal(len(a))
    return scores, same, a, b


def test_subject_folds_deal_sorted_people_round_robin() -> None:
    np.testing.assert_array_equal(subject_folds(np.array([7, 3, 9, 3, 12]), 3), [1, 0, 2, 0, 0])


def test_a_pairs_threshold_never_sees_its_people() -> None:
    """Whatever the other pairs of a person score, the threshold a pair of that person is
    scored at does not move. The round-robin folds of before fail this: they choose each fold's
    threshold on the other folds' pairs of the same people."""
    scores, same, a, b = _people_pairs()
    cv = person_disjoint_threshold_accuracy(scores, same, a, b, num_folds=4)
    assert cv.scored == len(scores)
    probe = int(np.flatnonzero(same & (a == 5))[0])
    others = ((a == 5) | (b == 5)) & (np.arange(len(a)) != probe)
    moved = scores.copy()
    moved[others] = np.where(same[others], 0.0, 0.6)  # the person's other pairs, misleading
    again = person_disjoint_threshold_accuracy(moved, same, a, b, num_folds=4)
    assert again.pair_thresholds[probe] == cv.pair_thresholds[probe]
    legacy = fold_ids(same, 4)
    before = kfold_threshold_accuracy(scores, same, folds=legacy).thresholds
    after = kfold_threshold_accuracy(moved, same, folds=legacy).thresholds
    assert before[legacy[probe]] != after[legacy[probe]]


def test_person_disjoint_threshold_on_a_known_example() -> None:
    """Four people, one fold each; person 3's same-person pair scores low (0.2)."""
    a = np.array([0, 1, 2, 3, 0, 0, 1, 0, 1, 2])
    b = np.array([0, 1, 2, 3, 1, 2, 2, 3, 3, 3])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.4, 0.3, 0.35, 0.45, 0.45, 0.45])
    same = a == b
    cv = person_disjoint_threshold_accuracy(scores, same, a, b, num_folds=4)
    assert cv.scored == 10
    # person 3's pair: chosen on people 0-2's six pairs, the gap (0.4, 0.7) -> rejected
    assert cv.pair_thresholds[3] == pytest.approx(0.55)
    # the (1, 3) negative: on the pairs of people 0 and 2 only (0.9, 0.7 against 0.3)
    assert cv.pair_thresholds[8] == pytest.approx(0.5)
    assert cv.accuracy == pytest.approx(9 / 10)


def test_person_disjoint_threshold_with_too_few_people() -> None:
    """Three people: a different-person pair leaves one person, whose pairs are all
    same-person, so no threshold can be chosen for it and the pair is not scored."""
    a, b = np.array([0, 1, 2, 0, 0, 1]), np.array([0, 1, 2, 1, 2, 2])
    cv = person_disjoint_threshold_accuracy(np.linspace(0, 1, 6), a == b, a, b)
    assert cv.scored == 3 and np.isnan(cv.pair_thresholds[3:]).all()
    with pytest.raises(ValueError, match="no pair can be scored"):
        person_disjoint_threshold_accuracy([0.1, 0.9], [False, True], [0, 0], [1, 0])
