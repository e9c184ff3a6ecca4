"""Split protocols: sklearn-like subject folds, sequence hold-out, and no leaks on either."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mtlkit_face.data.protocols import (
    PROTOCOLS,
    SequenceHoldout,
    SplitIndex,
    SubjectKFold,
    check_split,
    kfold_bounds,
    warn_single_subject,
)
from mtlkit_face.data.records import FaceRecord, RecordTable, index_records, natural_key

from mtlkit.errors import DataError

from .conftest import ck48_root

EXPR = ["anger", "happy", "surprise"]


def make_table(seqs_per_subject: list[int], frames: int = 3) -> RecordTable:
    """Subject i has seqs_per_subject[i] sequences, sequence j showing expression j % 3."""
    records = []
    for i, n in enumerate(seqs_per_subject):
        for j in range(n):
            for f in range(frames):
                records.append(FaceRecord(f"S{i:03d}", f"S{i:03d}_{j:03d}", EXPR[j % 3], frame=f))
    return index_records(records)


def sides(table: RecordTable, split: SplitIndex, key: np.ndarray) -> list[set[int]]:
    return [set(key[rows].tolist()) for rows in (split.train, split.val, split.test)]


def assert_disjoint(parts: list[set[int]]) -> None:
    for i in range(3):
        for j in range(i + 1, 3):
            assert not parts[i] & parts[j]


def test_registry_names() -> None:
    assert set(PROTOCOLS) == {"subject-kfold", "sequence-holdout"}
    assert PROTOCOLS["subject-kfold"] is SubjectKFold


def test_kfold_bounds_like_sklearn() -> None:
    # 118 subjects in 10 folds: the first 8 folds get 12, the last 2 get 11, contiguous.
    bounds = [kfold_bounds(118, 10, f) for f in range(10)]
    assert [b - a for a, b in bounds] == [12] * 8 + [11] * 2
    assert bounds[0][0] == 0 and bounds[-1][1] == 118
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(9))


@pytest.mark.parametrize(("n", "k", "fold"), [(5, 10, 0), (20, 10, 10), (20, 10, -1), (20, 1, 0)])
def test_kfold_bad_arguments(n: int, k: int, fold: int) -> None:
    with pytest.raises(DataError, match="fold"):
        kfold_bounds(n, k, fold)


def test_subject_kfold_leak_free_over_all_folds() -> None:
    table = make_table([1 + i % 4 for i in range(23)])
    tested: list[int] = []
    for fold in range(5):
        p = SubjectKFold(num_folds=5, fold=fold, val_fraction=0.2)
        split = p.split(table)
        check_split(table, split, p)
        assert_disjoint(sides(table, split, table.subject_idx))
        assert_disjoint(sides(table, split, table.sequence_idx))
        rows = np.concatenate([split.train, split.val, split.test])
        assert sorted(rows.tolist()) == list(range(len(table)))
        test_subjects = sorted(set(table.subject_idx[split.test].tolist()))
        assert test_subjects == list(range(test_subjects[0], test_subjects[-1] + 1))  # contiguous
        n_train = 23 - len(test_subjects)
        assert len(set(table.subject_idx[split.val].tolist())) == round(0.2 * n_train)
        tested += test_subjects
    assert sorted(tested) == list(range(23))  # each subject tested exactly once


def test_subject_kfold_without_validation() -> None:
    table = make_table([2] * 10)
    split = SubjectKFold(num_folds=5, fold=1, val_fraction=0.0).split(table)
    assert len(split.val) == 0


def test_sequence_holdout_leak_free_and_closed_set() -> None:
    counts = [1, 2, 3, 4, 5, 1, 3, 2, 6, 3]
    table = make_table(counts)
    for fold in range(3):
        p = SequenceHoldout(val_fraction=0.2, seed=1, fold=fold)
        split = p.split(table)
        check_split(table, split, p)
        assert_disjoint(sides(table, split, table.sequence_idx))
        train_s, val_s, test_s = sides(table, split, table.subject_idx)
        assert train_s == set(range(len(counts)))  # every subject is a training identity
        assert test_s == {i for i, n in enumerate(counts) if n >= 2}
        for s in test_s:  # exactly one held-out sequence per subject with 2+
            seqs = set(table.sequence_idx[split.test][table.subject_idx[split.test] == s].tolist())
            assert len(seqs) == 1
        assert all(counts[s] >= 3 for s in val_s)
        assert val_s


def test_sequence_holdout_deterministic_and_folds_rotate() -> None:
    table = make_table([3] * 12)
    a = SequenceHoldout(seed=3).split(table)
    b = SequenceHoldout(seed=3).split(table)
    c = SequenceHoldout(seed=3, fold=1).split(table)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not set(table.sequence_idx[a.test].tolist()) & set(table.sequence_idx[c.test].tolist())


def test_sequence_holdout_needs_a_subject_with_two_sequences() -> None:
    with pytest.raises(DataError, match="2 or more sequences"):
        SequenceHoldout().split(make_table([1, 1, 1]))
    with pytest.raises(DataError, match="fold 10"):
        SequenceHoldout(fold=10).split(make_table([2, 2]))


def test_check_split_names_a_class_missing_from_training() -> None:
    records = [FaceRecord(f"S{i}", f"S{i}_1", "happy") for i in range(4)]
    records.append(FaceRecord("S0", "S0_2", "fear"))  # fear only for the first subject
    table = index_records(records)
    p = SubjectKFold(num_folds=4, fold=0, val_fraction=0.0)
    with pytest.raises(DataError, match="fear"):
        check_split(table, p.split(table), p)
    check_split(table, p.split(table), p, need_expressions=False)


def test_check_split_refuses_a_leak() -> None:
    table = make_table([2, 2, 2])
    rows = np.arange(len(table))
    leaky = SplitIndex(train=rows[:-1], val=rows[:0], test=rows[-1:])
    with pytest.raises(DataError, match="both train and test"):
        check_split(table, leaky, SequenceHoldout())


def test_index_records_listed_class_without_images() -> None:
    records = [FaceRecord("S1", "S1_1", "happy")]
    with pytest.raises(DataError, match="'fear'"):
        index_records(records, ["happy", "fear"])
    with pytest.raises(DataError, match="sequence 'x'"):
        index_records([FaceRecord("S1", "x", "happy"), FaceRecord("S2", "x", "happy")])


def test_natural_sort() -> None:
    assert sorted(["S10", "S2", "S1"], key=natural_key) == ["S1", "S2", "S10"]


@pytest.mark.bad_input("labels and split")
def test_sequence_holdout_treats_unknown_sequences_as_singletons() -> None:
    """Images without a sequence (one sequence each, as the manifest makes them) split alone."""
    records = [FaceRecord("S0", f"S0/ (line {i})", EXPR[i % 3]) for i in range(5)]
    records += [FaceRecord("S1", "S1/a", EXPR[f % 3], frame=f) for f in range(3)]
    records += [FaceRecord("S1", "S1/b", EXPR[f % 3], frame=f) for f in range(3)]
    table = index_records(records)
    p = SequenceHoldout(val_fraction=0.2, seed=0)
    split = p.split(table)
    check_split(table, split, p, need_expressions=False)
    test_s0 = [r for r in split.test if table.subject_idx[r] == 0]
    assert len(test_s0) == 1  # one singleton of S0 held out: one image, not all five
    assert len(split.val) == 1 and table.subject_idx[split.val[0]] == 0  # 3+ "sequences"
    assert len(split.test) == 1 + 3  # S1 holds out one whole recording


@pytest.mark.bad_input("labels and split")
def test_single_subject_test_fold_warns() -> None:
    table = make_table([2] * 3)
    p = SubjectKFold(num_folds=3, fold=1, val_fraction=0.0)
    with pytest.warns(UserWarning, match="fold 1 has one subject in its test split: verification"):
        warn_single_subject(table, p.split(table), p)


def test_single_subject_validation_split_warns() -> None:
    table = make_table([2] * 6)
    p = SubjectKFold(num_folds=3, fold=0, val_fraction=0.1)
    with pytest.warns(UserWarning, match="one subject in its validation split"):
        warn_single_subject(table, p.split(table), p)


def test_two_subject_splits_do_not_warn() -> None:
    table = make_table([2] * 8)
    p = SubjectKFold(num_folds=4, fold=0, val_fraction=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_single_subject(table, p.split(table), p)


def test_real_ck48_protocols_leak_free() -> None:
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    from mtlkit_face.data.ck48 import CK48Data

    records, _ = CK48Data(CK48Data.Options(root=str(root))).load_records()
    table = index_records(records)
    for fold in range(10):
        p = SubjectKFold(10, fold, 0.1)
        split = p.split(table)
        check_split(table, split, p)
        assert_disjoint(sides(table, split, table.subject_idx))
        assert_disjoint(sides(table, split, table.sequence_idx))
        q = SequenceHoldout(0.1, seed=0, fold=fold)
        split = q.split(table)
        check_split(table, split, q)
        assert_disjoint(sides(table, split, table.sequence_idx))
        assert len(set(table.sequence_idx[split.test].tolist())) == 97
