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
    roc_auc,
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
