"""The ``face_identity`` task: softmax (optionally margin) identity classifier on an embedding,
plus center loss, evaluated by closed-set identification and pair verification.

Under ``subject-kfold`` the test people are unseen in training (their identity target is
MISSING_LABEL), so only the verification metrics, which need no class index, apply to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from mtlkit import distributed
from mtlkit.errors import CheckpointError, ConfigError
from mtlkit.options import Options
from mtlkit.task import (
    UNIT,
    MetricMeter,
    MetricSpec,
    Task,
    TaskPrediction,
    accuracy_from_logits,
    class_columns,
)
from mtlkit_face.metrics.pair_protocols import (
    ALL_PAIRS,
    BASES,
    CROSS_SEQUENCE,
    PAIR_PROTOCOLS,
    PairSettings,
    metric_name,
    verification_metrics,
)
from mtlkit_face.metrics.verification import DEFAULT_FOLDS, cosine_scores
from mtlkit_face.tasks.heads import (
    MARGIN_DEFAULTS,
    FaceIdentityHead,
    center_loss,
    center_sums,
    margin_logits,
    update_centers_,
)

THRESHOLD_METRIC = "verification_threshold"
"""The cosine threshold (same person when above) most accurate on all of a split's headline
pairs (cross-sequence where the data has sequences): the run's decision threshold for new
pairs, read from the validation metrics by ``mtlkit predict``."""
HEADLINE_METRIC = metric_name("verification_accuracy", CROSS_SEQUENCE)
"""The headline verification accuracy: cross-sequence positives, person-disjoint threshold."""


class CenterLossOptions(Options):
    """The center-loss variant. The defaults are the paper authors' code (Ming et al. 2019):
    the L2-normalised embedding (so ``0.5 ||e - c||^2 <= 2``) and moving-average centres that no
    optimizer or weight decay touches."""

    space: Literal["normalized", "raw"] = "normalized"
    """normalized: on the unit-length embedding (the authors'); raw: on the embedding as the head
    outputs it (after its BatchNorm), unbounded, mtlkit's form before 0.2."""
    update: Literal["moving_average", "learned"] = "moving_average"
    """moving_average: centres are a buffer moved towards each class's batch mean after every
    step (Wen et al. 2016, the authors' code); learned: a parameter trained by the optimizer
    through the loss (with its weight decay), mtlkit's form before 0.2."""
    rate: float = Field(0.5, gt=0.0, le=1.0)
    """Step of the moving average, ``c <- c - rate (c - batch mean)``; the authors'
    ``--center_loss_alfa 0.5`` (their step is ``1 - alfa``) gives 0.5."""


class FaceIdentityOptions(Options):
    embedding_dim: int | None = Field(128, ge=1)
    """Width of the embedding used for verification (and by the classifier); null: no embedding
    layer, the backbone's features are the embedding (a pretrained face network's descriptor,
    e.g. backbone ``dlib_face``; with ``embedding_bn: false`` verification then scores exactly
    that descriptor)."""
    embedding_bn: bool = True
    """BatchNorm1d after the embedding layer (the FaceNet-style bottleneck)."""
    margin: Literal["none", "cosface", "arcface"] = "none"
    """none: linear softmax; cosface / arcface: cosine classifier with an additive margin."""
    scale: float = Field(30.0, gt=0.0)
    """Cosine-logit scale of the margin heads (ignored with margin: none)."""
    margin_value: float | None = Field(None, ge=0.0)
    """Margin size; None: 0.35 for cosface, 0.5 for arcface."""
    center_loss_weight: float = Field(0.0, ge=0.0)
    """Weight of 0.5 ||e - c_y||^2 added to each sample's loss; the paper's code uses 0.1."""
    center_loss: CenterLossOptions = Field(default_factory=lambda: CenterLossOptions())
    """Where the center loss is measured and how the centres move (defaults: the authors')."""
    max_pairs: int = Field(6000, ge=2)
    """Verification pairs per evaluation and protocol, half positive and half negative."""
    cross_expression_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Share of positive pairs whose two images differ in expression (where the data allows)."""
    pair_seed: int = 0
    """Seed of the pair sampling: the same samples always give the same pairs."""
    verification_folds: int = Field(DEFAULT_FOLDS, ge=2)
    """Person-disjoint folds of the threshold cross-validation (LFW: 10): the people are dealt
    to the folds, and no pair is scored at a threshold chosen on pairs of its people."""

    @model_validator(mode="after")
    def _margin_consistent(self) -> FaceIdentityOptions:
        if self.margin == "none" and self.margin_value is not None:
            raise ValueError("margin_value is set but margin is 'none' (choose cosface or arcface)")
        return self

    @property
    def resolved_margin(self) -> float:
        """The margin in use (0 without a margin head)."""
        if self.margin == "none":
            return 0.0
        return self.margin_value if self.margin_value is not None else MARGIN_DEFAULTS[self.margin]


class FaceIdentityMeter(MetricMeter):
    """Collects normalised embeddings with subject/expression/sequence ids, and identification hits.

    Pairs are built in ``compute`` from everything seen, sorted by ``meta["index"]``, so the result
    does not depend on batch order or on how ranks sharded the split. Verification is scored
    under each protocol of ``mtlkit_face.metrics.pair_protocols``; a batch without
    ``meta["sequence"]`` (a generic dataset) leaves the split with the all-pairs form only.
    """

    def __init__(self, options: FaceIdentityOptions, missing_label: int) -> None:
        self.options = options
        self.missing_label = missing_label
        self.embeddings: list[Tensor] = []
        self.subjects: list[Tensor] = []
        self.expressions: list[Tensor] = []
        self.sequences: list[Tensor] | None = []
        """None once a batch came without sequence labels."""
        self.indices: list[Tensor] = []
        self.hits = 0
        self.labelled = 0
        self._seen = 0

    def update(self, output: Any, target: Tensor, batch: Mapping[str, Any]) -> None:
        emb = output["embedding"].detach()
        n = emb.shape[0]
        self.embeddings.append(F.normalize(emb.float(), dim=1).cpu())
        target = target.detach().cpu()
        meta = batch.get("meta") or {}
        # without meta (a generic dataset) the labelled identity stands in for the subject
        subject = meta.get("subject")
        self.subjects.append(
            subject.detach().cpu().long() if subject is not None else target.long()
        )
        expression = meta.get("expression")
        self.expressions.append(
            expression.detach().cpu().long()
            if expression is not None
            else torch.zeros(n, dtype=torch.long)
        )
        sequence = meta.get("sequence")
        if sequence is None or self.sequences is None:
            self.sequences = None
        else:
            self.sequences.append(sequence.detach().cpu().long())
        index = meta.get("index")
        self.indices.append(
            index.detach().cpu().long()
            if index is not None
            else torch.arange(self._seen, self._seen + n, dtype=torch.long)
        )
        self._seen += n
        mask = target != self.missing_label
        pred = output.get("prediction")  # evaluation hands over meter_inputs(): no logits
        pred = (pred if pred is not None else output["logits"].argmax(dim=-1)).detach().cpu()
        self.hits += int(((pred == target) & mask).sum())
        self.labelled += int(mask.sum())

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        emb = torch.cat(self.embeddings).numpy()
        subj = torch.cat(self.subjects).numpy()
        expr = torch.cat(self.expressions).numpy()
        seq = None if self.sequences is None else torch.cat(self.sequences).numpy()
        idx = torch.cat(self.indices).numpy()
        order = np.lexsort((np.arange(len(idx)), idx))
        keep = subj[order] != self.missing_label  # samples with no known person cannot pair
        order = order[keep]
        return emb[order], subj[order], expr[order], None if seq is None else seq[order]

    def compute(self) -> dict[str, float]:
        o = self.options
        out: dict[str, float] = {}
        if self.labelled:
            out["identification_accuracy"] = self.hits / self.labelled
            out["identification_count"] = float(self.labelled)
        if not self.embeddings:
            out[metric_name("num_pairs", ALL_PAIRS)] = 0.0
            return out
        settings = PairSettings(
            max_pairs=o.max_pairs,
            cross_fraction=o.cross_expression_fraction,
            seed=o.pair_seed,
            folds=o.verification_folds,
        )
        metrics, threshold = verification_metrics(*self._arrays(), settings)
        out.update(metrics)
        if threshold is not None:
            out[THRESHOLD_METRIC] = threshold
        return out


class FaceIdentityTask(Task):
    """Identity classification over the training people; its embedding serves verification."""

    Options = FaceIdentityOptions
    options: FaceIdentityOptions
    pair_protocols: tuple[str, ...] = PAIR_PROTOCOLS
    """The verification protocols the metrics declare: every one until the data says (in
    ``info["pair_protocols"]``) which its samples support; a source that does not say carries
    no sequences, so it gets the all-pairs form only."""

    def build_head(self, feature_dim: int, info: Mapping[str, Any]) -> nn.Module:
        num_classes = int(info.get("num_classes", 0))
        if num_classes < 1:
            raise ConfigError(
                f"task {self.name!r}: the data reports {num_classes} training identities"
            )
        self.num_classes = num_classes
        self.class_names = [str(n) for n in info.get("class_names") or range(num_classes)]
        protocols = tuple(info.get("pair_protocols") or (ALL_PAIRS,))
        unknown = [p for p in protocols if p not in PAIR_PROTOCOLS]
        if unknown:
            raise ConfigError(
                f"task {self.name!r}: the data names pair protocol(s) {unknown}; known:"
                f" {list(PAIR_PROTOCOLS)}"
            )
        self.pair_protocols = protocols
        o = self.options
        self.embedding_size = o.embedding_dim or feature_dim
        return FaceIdentityHead(
            feature_dim,
            num_classes,
            embedding_dim=o.embedding_dim,
            embedding_bn=o.embedding_bn,
            cosine=o.margin != "none",
            scale=o.scale,
            centers=o.center_loss.update if o.center_loss_weight > 0 else "none",
        )

    def per_sample_loss(self, output: Any, target: Tensor) -> Tensor:
        o = self.options
        logits = output["logits"].float()
        if o.margin != "none":
            # the head returns scale * cos without the target; the margin goes on here
            cos = (logits / o.scale).clamp(-1.0, 1.0)
            logits = margin_logits(o.margin, cos, target, o.resolved_margin, o.scale)
        loss = F.cross_entropy(logits, target, reduction="none")
        if o.center_loss_weight > 0:
            centers = output["centers"].float()
            loss = loss + o.center_loss_weight * center_loss(
                self._center_space(output["embedding"]), centers, target
            )
        return loss

    def _center_space(self, embedding: Tensor) -> Tensor:
        e = embedding.float()
        return F.normalize(e, dim=1) if self.options.center_loss.space == "normalized" else e

    def update_state(self, output: Any, target: Tensor) -> None:
        """Moving-average centres: one step towards each class's mean over ALL ranks' samples."""
        o = self.options
        if o.center_loss_weight <= 0 or o.center_loss.update != "moving_average":
            return
        centers = output["centers"]
        mask = self.labelled_mask(target)
        e = self._center_space(output["embedding"].detach())[mask]
        sums, counts = center_sums(e, target[mask].long(), centers.shape[0])
        distributed.all_sum_(sums)
        distributed.all_sum_(counts)
        update_centers_(centers, sums, counts, o.center_loss.rate)

    def metrics(self) -> list[MetricSpec]:
        """Identification, then each verification protocol's metrics, the headline first."""
        return [MetricSpec("identification_accuracy", bounds=UNIT)] + [
            MetricSpec(metric_name(base, protocol), bounds=UNIT)
            for protocol in self.pair_protocols
            for base in BASES
            if base != "num_pairs"
        ]

    def new_meter(self) -> FaceIdentityMeter:
        return FaceIdentityMeter(self.options, self.missing_label)

    def step_metric(self, output: Any, target: Tensor) -> Tensor:
        return accuracy_from_logits(output["logits"].detach(), target, self.labelled_mask(target))

    # --- using the trained model -------------------------------------------------------------
    def meter_inputs(self, output: Any) -> Any:
        """The embedding and the predicted identity: the meter needs no logits, which over many
        training people would dominate what DDP evaluation gathers (C floats per sample)."""
        return {"embedding": output["embedding"], "prediction": output["logits"].argmax(dim=-1)}

    def inference_outputs(self, output: Any) -> dict[str, Tensor]:
        """Logits and the raw embedding; the centres are parameters, not per-sample outputs."""
        return {"logits": output["logits"], "embedding": output["embedding"]}

    def predict(self, outputs: Mapping[str, Tensor]) -> TaskPrediction:
        """The closest training identity (a closed-set guess: new people get someone's name, so
        use ``confidence`` or pairs) and the L2-normalised embedding that verification compares."""
        return TaskPrediction(
            columns=class_columns(outputs["logits"], self.class_names, probabilities=False),
            arrays={"embedding": F.normalize(outputs["embedding"].detach().float(), dim=1).cpu()},
        )

    def describe_outputs(self, recorded: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        threshold = recorded.get(THRESHOLD_METRIC)
        return {
            "logits": {
                "kind": "class logits over the training identities",
                "class_names": list(self.class_names),
                "probabilities": "softmax over the last axis",
            },
            "embedding": {
                "kind": "identity embedding",
                "size": getattr(self, "embedding_size", self.options.embedding_dim),
                "compare": "cosine similarity of the L2-normalised embeddings",
                "same_person_when": "cosine > threshold",
                "threshold": threshold,
            },
        }

    def score_pairs(
        self,
        outputs: Mapping[str, Tensor],
        first: Tensor,
        second: Tensor,
        recorded: Mapping[str, Any],
        threshold: float | None = None,
    ) -> dict[str, list[Any]]:
        """Cosine score of each pair, and ``same`` when it passes the run's threshold (the one
        most accurate on the validation pairs at the checkpoint's step)."""
        if threshold is None:
            value = recorded.get(THRESHOLD_METRIC)
            if value is None:
                raise CheckpointError(
                    f"task {self.name!r}: the run recorded no {THRESHOLD_METRIC} for this"
                    " checkpoint (no validation pairs at its step, or a run from before"
                    " mtlkit 0.2); pass --threshold"
                )
            threshold = float(value)
        scores = cosine_scores(outputs["embedding"], first, second)
        return {
            "score": scores.tolist(),
            "same": (scores > threshold).tolist(),
            "threshold": [threshold] * len(scores),
        }
