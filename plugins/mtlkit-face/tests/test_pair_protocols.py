"""The verification protocols (issue 23): cross-sequence positives as the headline, the
all-pairs form beside it, and what is recorded for a source without sequences."""

from __future__ import annotations

import numpy as np
import pytest
from mtlkit_face.metrics.pair_protocols import (
    ALL_PAIRS,
    CROSS_SEQUENCE,
    PairSettings,
    metric_name,
    verification_metrics,
)
from mtlkit_face.metrics.verification import make_pairs

from .conftest import ck48_root


def near_duplicates(people: int = 8, sequences: int = 3, frames: int = 4):
    """Frames of one sequence share an embedding; sequences are random directions, even for
    one person: only the same-sequence positives are easy."""
    rng = np.random.default_rng(0)
    per_seq = rng.standard_normal((people * sequences, 32))
    seq_of = np.repeat(np.arange(people * sequences), frames)
    emb = per_seq[seq_of] + 0.01 * rng.standard_normal((len(seq_of), 32))
    subj = seq_of // sequences
    seq = seq_of % sequences  # numbered per person, like CK+'s S010_001, S011_001
    return emb, subj, seq.copy(), seq


def test_near_duplicate_frames_inflate_only_the_all_pairs_form() -> None:
    emb, subj, expr, seq = near_duplicates()
    # 600 pairs: half the all-pairs positives are same-sequence, so that form nears 0.75
    m, threshold = verification_metrics(emb, subj, expr, seq, PairSettings(max_pairs=600))
    head = m[metric_name("verification_accuracy", CROSS_SEQUENCE)]
    old = m[metric_name("verification_accuracy", ALL_PAIRS)]
    assert head < 0.6 < 0.7 < old  # chance across sequences; same-sequence pairs are easy
    assert m[metric_name("verification_auc", CROSS_SEQUENCE)] < 0.65
    assert "verification_accuracy" not in m and "num_pairs" not in m  # never the old names
    assert threshold is not None


def test_without_sequences_only_the_all_pairs_form_is_recorded() -> None:
    emb, subj, expr, _ = near_duplicates()
    m, _ = verification_metrics(emb, subj, expr, None, PairSettings())
    assert metric_name("verification_accuracy", ALL_PAIRS) in m
    assert not [k for k in m if CROSS_SEQUENCE in k]


def test_ck48_fold3_test_pairs_by_sequence_name() -> None:
    """The audit's count: of fold 3's 498 same-person test pairs, 111 join two frames of one
    sequence; the cross-sequence form has none, judged by the sequences' names."""
    root = ck48_root()
    if root is None:
        pytest.skip("CK+48 not present (set MTLKIT_CK48)")
    from mtlkit_face.data.ck48 import CK48Data

    data = CK48Data(CK48Data.Options(root=str(root), fold=3))
    data.setup(["face_identity", "expression"], {"in_chans": 1})
    t, rows = data.table, data.split_index.test
    subj, expr, seq = t.subject_idx[rows], t.expression_idx[rows], t.sequence_idx[rows]
    names = np.array([t.sequences[i] for i in seq])  # "S071_004": subject and sequence
    assert all(n.startswith(t.subjects[s] + "_") for n, s in zip(names, subj, strict=True))

    old = make_pairs(subj, expr)
    same_seq = names[old.first] == names[old.second]
    assert old.same.sum() == 498 and (same_seq & old.same).sum() == 111
    new = make_pairs(subj, expr, sequences=seq)
    assert not (names[new.first] == names[new.second]).any()
    assert new.same.sum() == 498 - 111  # every cross-sequence positive, as many negatives
