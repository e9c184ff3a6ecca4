"""The face_identity task: head shapes, margin/center losses, and its evaluation meter (the generic
missing-label and metric contract is checked by the conformance kit in test_conformance.py)."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from mtlkit_face.metrics.pair_protocols import ALL_PAIRS, CROSS_SEQUENCE, metric_name
from mtlkit_face.tasks.heads import arcface_logits, center_loss, cosface_logits
from mtlkit_face.tasks.identity import HEADLINE_METRIC, THRESHOLD_METRIC, FaceIdentityTask
from pydantic import ValidationError

from mtlkit.task import MISSING_LABEL

MARGINS = ["none", "cosface", "arcface"]
ACC, AUC, TAR = "verification_accuracy", "verification_auc", "tar_at_far_1e-2"
XSEQ = {b: metric_name(b, CROSS_SEQUENCE) for b in (ACC, AUC, TAR, "num_pairs")}
ALL = {b: metric_name(b, ALL_PAIRS) for b in (ACC, AUC, TAR, "num_pairs")}
K, FEAT, EMB = 5, 12, 8


def make_task(**options: object) -> FaceIdentityTask:
    return FaceIdentityTask("face_identity", FaceIdentityTask.Options(**options))


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("bn", [True, False])
def test_head_shapes(margin: str, bn: bool) -> None:
    torch.manual_seed(0)
    task = make_task(margin=margin, embedding_dim=EMB, embedding_bn=bn)
    head = task.build_head(FEAT, {"num_classes": K, "class_names": list("abcde")})
    out = head(torch.randn(6, FEAT))
    assert set(out) == {"logits", "embedding"}
    assert out["logits"].shape == (6, K) and out["embedding"].shape == (6, EMB)
    if margin != "none":  # cosines times the scale
        assert out["logits"].abs().max() <= task.options.scale + 1e-4
    head.eval()
    assert head(torch.randn(1, FEAT))["logits"].shape == (1, K)


def test_center_loss_defaults_are_the_authors() -> None:
    o = make_task().options.center_loss
    assert (o.space, o.update, o.rate) == ("normalized", "moving_average", 0.5)


@pytest.mark.parametrize("update", ["moving_average", "learned"])
def test_centers_are_in_the_state_dict_and_only_learned_ones_are_parameters(update: str) -> None:
    task = make_task(center_loss_weight=0.1, embedding_dim=EMB, center_loss={"update": update})
    head = task.build_head(FEAT, {"num_classes": K})
    assert head.state_dict()["centers"].shape == (K, EMB)
    in_params = any(p is head.centers for p in head.parameters())
    assert in_params == (update == "learned")  # moving-average centres never reach an optimizer
    assert head(torch.randn(3, FEAT))["centers"] is head.centers
    assert "centers" not in make_task().build_head(FEAT, {"num_classes": K}).state_dict()


def test_normalized_center_loss_is_bounded_whatever_the_embedding_scale() -> None:
    torch.manual_seed(0)
    emb = 1000.0 * torch.randn(16, EMB)
    target = torch.randint(0, K, (16,))
    out = {"logits": torch.zeros(16, K), "embedding": emb, "centers": torch.zeros(K, EMB)}
    ce = make_task().per_sample_loss(out, target)
    norm = make_task(center_loss_weight=1.0).per_sample_loss(out, target) - ce
    raw = make_task(center_loss_weight=1.0, center_loss={"space": "raw"}).per_sample_loss(
        out, target
    ) - ce
    assert torch.allclose(norm, torch.full((16,), 0.5))  # zero centres: 0.5 ||e/|e| ||^2
    assert (raw > 1e4).all()  # the raw form grows with the embedding
    # with any centre inside the unit ball the normalised term is at most 2
    centers = F.normalize(torch.randn(K, EMB), dim=1)
    out["centers"] = centers
    norm = make_task(center_loss_weight=1.0).per_sample_loss(out, target) - ce
    assert (norm <= 2.0 + 1e-5).all()


def test_moving_average_update_is_the_authors_rule() -> None:
    task = make_task(center_loss_weight=0.1, embedding_dim=2, embedding_bn=False,
                     center_loss={"space": "raw", "rate": 0.5})
    centers = torch.tensor([[1.0, 1.0], [5.0, 5.0], [-2.0, 0.0]])
    emb = torch.tensor([[3.0, 1.0], [1.0, 3.0], [0.0, 0.0], [9.0, 9.0]])
    target = torch.tensor([0, 0, MISSING_LABEL, 2])
    task.update_state({"embedding": emb, "centers": centers}, target)
    # class 0: c - 0.5 (c - mean(e)) with mean (2, 2); class 1 absent: unchanged; the unlabelled
    # sample moves nothing (its filled-in label would otherwise drag class 0)
    expected = torch.tensor([[1.5, 1.5], [5.0, 5.0], [3.5, 4.5]])
    assert torch.allclose(centers, expected)


def test_moving_average_centres_live_on_the_unit_sphere_side() -> None:
    task = make_task(center_loss_weight=0.1, embedding_dim=2, embedding_bn=False)
    centers = torch.zeros(1, 2)
    emb = torch.tensor([[30.0, 40.0]])
    for _ in range(40):
        task.update_state({"embedding": emb, "centers": centers}, torch.tensor([0]))
    assert torch.allclose(centers, torch.tensor([[0.6, 0.8]]), atol=1e-6)  # the normalised e


@pytest.mark.parametrize("margin", ["cosface", "arcface"])
def test_margin_makes_the_loss_harder(margin: str) -> None:
    torch.manual_seed(1)
    cos = torch.empty(8, K).uniform_(-0.9, 0.9)
    target = torch.randint(0, K, (8,))
    out = {"logits": 30.0 * cos, "embedding": torch.randn(8, EMB)}
    plain = make_task(margin="none").per_sample_loss(out, target)
    marg = make_task(margin=margin).per_sample_loss(out, target)
    assert (marg > plain).all()
    # the defaults are the papers' margins
    expected = {"cosface": 0.35, "arcface": 0.5}[margin]
    assert make_task(margin=margin).options.resolved_margin == expected


def test_margin_formulas() -> None:
    cos = torch.tensor([[0.5, 0.2], [0.1, -0.3]])
    target = torch.tensor([0, 1])
    cf = cosface_logits(cos, target, 0.35, 10.0)
    assert torch.allclose(cf, 10.0 * torch.tensor([[0.15, 0.2], [0.1, -0.65]]))
    af = arcface_logits(cos, target, 0.5, 10.0)
    assert af[0, 0].item() == pytest.approx(10.0 * math.cos(math.acos(0.5) + 0.5), rel=1e-5)
    assert af[0, 1].item() == pytest.approx(2.0)  # non-target logits untouched


def test_arcface_is_finite_at_the_poles() -> None:
    cos = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)
    logits = arcface_logits(cos, torch.tensor([0, 0]), 0.5, 30.0)
    F.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(cos.grad).all()


def test_center_loss_is_added_and_pulls_embeddings_to_their_center() -> None:
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    emb = torch.tensor([[3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([0, 1])
    per = center_loss(emb, centers, target)
    assert torch.allclose(per, torch.tensor([2.0, 2.0]))  # 0.5 * ||e - c_y||^2
    out = {"logits": torch.zeros(2, 2), "embedding": emb, "centers": centers}
    with_c = make_task(center_loss_weight=0.1, center_loss={"space": "raw"}).per_sample_loss(
        out, target
    )
    without = make_task().per_sample_loss(out, target)
    assert torch.allclose(with_c - without, 0.1 * per)
    with_c.sum().backward()
    moved = emb.detach() - 1.0 * emb.grad
    before = (emb.detach() - centers).norm(dim=1)
    after = (moved - centers).norm(dim=1)
    assert (after < before).all()


@pytest.mark.parametrize(
    "variant",
    [{}, {"update": "learned"}, {"space": "raw"}, {"space": "raw", "update": "learned"}],
)
def test_center_loss_training_tightens_classes(variant: dict[str, str]) -> None:
    torch.manual_seed(0)
    task = make_task(center_loss_weight=1.0, embedding_dim=EMB, embedding_bn=False,
                     center_loss=variant)
    head = task.build_head(FEAT, {"num_classes": 3})
    x = torch.randn(30, FEAT)
    y = torch.arange(30) % 3

    def spread() -> float:
        with torch.no_grad():
            e = task._center_space(head(x)["embedding"])
        return sum(float((e[y == k] - e[y == k].mean(0)).pow(2).sum()) for k in range(3))

    def center_term() -> float:
        with torch.no_grad():
            out = head(x)
            term = center_loss(task._center_space(out["embedding"]), out["centers"], y)
            return float(term.mean())

    before, term_before = spread(), center_term()
    for _ in range(30):  # plain gradient steps (torch.optim's first use is slow to import)
        head.zero_grad()
        out = head(x)
        task.loss(out, y).backward()
        with torch.no_grad():
            for p in head.parameters():
                p -= 0.05 * p.grad
            task.update_state(out, y)
    assert spread() < before
    assert center_term() < term_before


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="margin_value"):
        FaceIdentityTask.Options(margin_value=0.2)
    with pytest.raises(ValidationError):
        FaceIdentityTask.Options(margin="sphereface")
    assert FaceIdentityTask.Options(margin="cosface", margin_value=0.2).resolved_margin == 0.2


def test_step_metric_is_a_tensor_over_labelled_samples() -> None:
    task = make_task()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    out = {"logits": logits, "embedding": torch.zeros(4, 2)}
    acc = task.step_metric(out, torch.tensor([0, 0, MISSING_LABEL, 1]))
    assert isinstance(acc, torch.Tensor)
    assert acc.item() == pytest.approx(2 / 3)
    assert task.step_metric(out, torch.full((4,), MISSING_LABEL)).item() == 0.0


# --- the meter ----------------------------------------------------------------------------------
def separated_set(subjects: int = 4, expressions: int = 3, frames: int = 3, noise: float = 0.05):
    """Embeddings near one axis per person; every sample carries subject/expression/index meta."""
    g = torch.Generator().manual_seed(0)
    rows = [(s, e) for s in range(subjects) for e in range(expressions) for _ in range(frames)]
    subj = torch.tensor([s for s, _ in rows])
    expr = torch.tensor([e for _, e in rows])
    emb = F.one_hot(subj, subjects + 2).float() + noise * torch.randn(
        len(rows), subjects + 2, generator=g
    )
    return emb, subj, expr


def feed(meter, emb, subj, expr, target, batches, seq=None):
    """Batches with meta; one sequence per (subject, expression) unless ``seq`` is given."""
    seq = expr if seq is None else seq  # compared within a subject: (subject, expression)
    for idx in batches:
        out = {"logits": F.one_hot(subj[idx], int(subj.max()) + 1).float(), "embedding": emb[idx]}
        meta = {"subject": subj[idx], "expression": expr[idx], "index": idx, "sequence": seq[idx]}
        meter.update(out, target[idx], {"input": None, "targets": {}, "meta": meta})


def test_meter_on_separated_unseen_people() -> None:
    emb, subj, expr = separated_set()
    task = make_task()
    meter = task.new_meter()
    target = torch.full_like(subj, MISSING_LABEL)  # held-out people: no identity class
    feed(meter, emb, subj, expr, target, torch.arange(len(subj)).split(5))
    m = meter.compute()
    assert "identification_accuracy" not in m
    for names in (XSEQ, ALL):
        assert m[names[ACC]] == 1.0 and m[names[AUC]] == 1.0 and m[names[TAR]] == 1.0
    assert m[ALL["num_pairs"]] == 2 * 4 * math.comb(9, 2)  # every positive, as many negatives
    # cross-sequence positives: two of a person's 3 expressions (one sequence each)
    assert m[XSEQ["num_pairs"]] == 2 * 4 * (math.comb(9, 2) - 3 * math.comb(3, 2))
    # the decision threshold (recorded for predict, not a metric to select on) splits the gap
    # between every different-person cosine and every same-person one
    cos = F.normalize(emb, dim=1) @ F.normalize(emb, dim=1).T
    same = subj[:, None] == subj[None, :]
    assert cos[~same].max() < m[THRESHOLD_METRIC] < cos[same].min()
    assert {s.name for s in task.metrics()} >= {k for k in m if not k.startswith("num_pairs")} - {
        THRESHOLD_METRIC
    }
    assert task.metrics()[1].name == HEADLINE_METRIC == XSEQ[ACC]


def test_meter_omits_tar_with_few_negatives_and_reports_identification() -> None:
    emb, subj, expr = separated_set(subjects=4, expressions=2, frames=2)
    meter = make_task().new_meter()
    target = subj.clone()
    target[::2] = MISSING_LABEL
    feed(meter, emb, subj, expr, target, [torch.arange(len(subj))])
    m = meter.compute()
    assert ALL[TAR] not in m  # 4 * C(4, 2) = 24 negatives < 100
    assert m["identification_accuracy"] == 1.0 and m["identification_count"] == 8
    assert m[XSEQ[ACC]] == 1.0 and m[ALL[ACC]] == 1.0


def test_meter_does_not_depend_on_batch_order() -> None:
    emb, subj, expr = separated_set(noise=0.8)  # overlapping: accuracy below 1
    idx = list(range(len(subj)))
    a, b = make_task(max_pairs=100).new_meter(), make_task(max_pairs=100).new_meter()
    feed(a, emb, subj, expr, subj, torch.tensor(idx).split(4))
    random.Random(0).shuffle(idx)
    feed(b, emb, subj, expr, subj, torch.tensor(idx).split(7))
    ma, mb = a.compute(), b.compute()
    assert ma == mb and ma[ALL["num_pairs"]] == ma[XSEQ["num_pairs"]] == 100
    assert ma[XSEQ[ACC]] < 1.0


def test_meter_without_meta_pairs_labelled_samples() -> None:
    emb, subj, _ = separated_set()
    meter = make_task().new_meter()
    meter.update({"logits": F.one_hot(subj, 4).float(), "embedding": emb}, subj, {})
    m = meter.compute()
    assert m[ALL[ACC]] == 1.0 and m["identification_accuracy"] == 1.0
    # no sequence labels: only the all-pairs form, nothing named cross-sequence
    assert not any(k.endswith(CROSS_SEQUENCE) for k in m)
    assert make_task().new_meter().compute() == {ALL["num_pairs"]: 0.0}


def test_meter_inputs_drop_the_logits_and_keep_every_metric() -> None:
    """Evaluation feeds meters ``meter_inputs(output)`` (what DDP gathers): for face_identity the
    embedding and the predicted identity, not C logits per sample; the metrics are unchanged."""
    emb, subj, _ = separated_set(noise=0.8)
    task = make_task(max_pairs=100)
    noise = torch.randn(len(subj), 4, generator=torch.Generator().manual_seed(0))
    logits = F.one_hot(subj, 4).float() + 0.3 * noise
    output = {"logits": logits, "embedding": emb}
    reduced = task.meter_inputs(output)
    assert set(reduced) == {"embedding", "prediction"} and reduced["prediction"].dtype == torch.long
    full, small = task.new_meter(), task.new_meter()
    full.update(output, subj, {})
    small.update(reduced, subj, {})
    assert full.compute() == small.compute()


def test_meter_headline_leaves_out_same_sequence_positives() -> None:
    """Two sequences per person, the frames of a sequence near-identical and the two sequences
    unrelated: the all-pairs form is inflated by near-duplicates, the headline is not (120
    pairs: half the all-pairs positives are same-sequence)."""
    g = torch.Generator().manual_seed(0)
    subj = torch.arange(8).repeat_interleave(8)
    seq = torch.arange(2).repeat_interleave(4).repeat(8)
    directions = torch.randn(16, 32, generator=g)
    emb = directions[subj * 2 + seq] + 0.01 * torch.randn(64, 32, generator=g)
    meter = make_task(max_pairs=120).new_meter()
    target = torch.full_like(subj, MISSING_LABEL)
    feed(meter, emb, subj, seq, target, torch.arange(64).split(10), seq=seq)
    m = meter.compute()
    assert m[HEADLINE_METRIC] < 0.65 < 0.75 < m[ALL[ACC]]
    assert ACC not in m  # the bare name of older runs (all pairs, round-robin) is not reused


def test_declared_metrics_follow_the_datas_pair_protocols() -> None:
    """The face datasets say both protocols apply; a source that does not say (no sequences)
    gets the all-pairs metrics declared, so no declared metric can be missing."""
    names = lambda task: [s.name for s in task.metrics()]  # noqa: E731
    task = make_task()
    assert names(task)[1] == HEADLINE_METRIC  # before the data is known: everything
    task.build_head(FEAT, {"num_classes": K, "pair_protocols": [CROSS_SEQUENCE, ALL_PAIRS]})
    assert names(task)[1:4] == [XSEQ[ACC], XSEQ[AUC], XSEQ[TAR]]
    task.build_head(FEAT, {"num_classes": K})
    assert names(task) == ["identification_accuracy", ALL[ACC], ALL[AUC], ALL[TAR]]
    with pytest.raises(Exception, match="pair protocol"):
        task.build_head(FEAT, {"num_classes": K, "pair_protocols": ["same_frame"]})


def test_no_embedding_layer_uses_the_features_themselves() -> None:
    """``embedding_dim: null``: a pretrained face network's descriptor is the embedding."""
    task = make_task(embedding_dim=None, embedding_bn=False)
    head = task.build_head(FEAT, {"num_classes": K, "class_names": list("abcde")})
    x = torch.randn(4, FEAT)
    out = head(x)
    assert torch.equal(out["embedding"], x) and out["logits"].shape == (4, K)
    assert task.describe_outputs({})["embedding"]["size"] == FEAT
