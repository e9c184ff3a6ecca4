"""What a checkpoint must agree on with the config that resumes or evaluates it.

Every difference between the checkpoint's stored config and the current one falls in one of
three kinds:

- **harmless**: where output goes and how progress shows (``output_dir``, ``trainer.progress``,
  ``trainer.num_threads``...), plus options a component declares harmless (``resume_harmless``
  on its Options class, e.g. a dataset's ``root`` folder). Always allowed.
- **legitimate**: how training continues (``trainer.epochs``, ``optimizer.*``, ``scheduler.*``,
  weighter options...). Refused unless the user passes ``--allow-config-change``; then applied
  (the learning-rate schedule is recomputed for the new settings) and recorded.
- **forbidden**: anything else: data, fold, protocol, seeds, tasks, backbone, batch size, the
  weighter's name. Always an error naming the field and both values.

Independently of the config, a checkpoint records which groups (subjects, sequences) it trained
on, by name within their data source; resuming or evaluating on a test split that holds any of
them is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mtlkit.config import ResolvedRun, flatten
from mtlkit.errors import CheckpointError

Kind = Literal["harmless", "legitimate", "forbidden"]

HARMLESS = (
    "output_dir",
    "trainer.progress",
    "trainer.log_every",
    "trainer.log_format",
    "trainer.num_threads",
    "trainer.plot",
    "trainer.eval_batch_size",
    "trainer.checkpoint_every",
    "trainer.checkpoint_epochs",
    "trainer.device",
    "trainer.diagnostics",
    "trainer.loader.",
    "trainer.batched_backward",
)
"""Paths (exact, or a prefix ending in '.') that never change what a run computes."""

LEGITIMATE = (
    "trainer.epochs",
    "trainer.max_steps",
    "trainer.grad_clip",
    "trainer.eval_every",
    "trainer.select",
    "trainer.select_metric",
    "trainer.on_nonfinite",
    "trainer.precision",
    "trainer.deterministic",
    "optimizer.",
    "scheduler.",
    "weighter.",
)
"""Paths that change how training continues, not what it trains on."""

FORBIDDEN_EVEN_UNDER = ("weighter.name", "optimizer.shared_lr_scale")
"""Exceptions inside a legitimate prefix: another weighter is another run, and another
shared_lr_scale splits the optimizer into other parameter groups."""

ALLOW_FLAG = "--allow-config-change"


@dataclass(frozen=True)
class Change:
    """One differing config field, with its kind."""

    path: str
    old: Any
    new: Any
    kind: Kind

    def describe(self) -> str:
        return f"{self.path}: checkpoint {_show(self.old)}, config {_show(self.new)}"

    def as_record(self, step: int) -> dict[str, Any]:
        return {"step": step, "field": self.path, "old": self.old, "new": self.new}


_MISSING = object()


def _show(value: Any) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value)


def declared_harmless(resolved: ResolvedRun) -> list[str]:
    """Config paths of the options each component declares harmless to change on resume."""
    return [
        f"{path}.{name}"
        for path, r in resolved.components()
        for name in getattr(type(r.options), "resume_harmless", ())
    ]


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(path == p or (p.endswith(".") and path.startswith(p)) for p in patterns)


def classify(path: str, harmless_extra: Iterable[str] = ()) -> Kind:
    """The kind of a change to ``path``; unknown paths are forbidden (the safe default)."""
    if _matches(path, HARMLESS) or _matches(path, harmless_extra):
        return "harmless"
    if _matches(path, FORBIDDEN_EVEN_UNDER):
        return "forbidden"
    if _matches(path, LEGITIMATE):
        return "legitimate"
    return "forbidden"


def diff_configs(
    stored: Mapping[str, Any], current: Mapping[str, Any], harmless_extra: Iterable[str] = ()
) -> list[Change]:
    """Every differing leaf between two config dicts, classified."""
    a, b = flatten(stored), flatten(current)
    extra = tuple(harmless_extra)
    changes = []
    for path in sorted(set(a) | set(b)):
        old, new = a.get(path, _MISSING), b.get(path, _MISSING)
        if old != new:
            changes.append(Change(path, old, new, classify(path, extra)))
    return changes


def check_resume(changes: list[Change], allow: bool) -> list[Change]:
    """Raise on forbidden changes (always) and legitimate ones (unless allowed); return the
    legitimate changes to apply and record."""
    forbidden = [c for c in changes if c.kind == "forbidden"]
    if forbidden:
        lines = "\n".join(f"  {c.describe()}" for c in forbidden)
        raise CheckpointError(
            "cannot resume: the config differs from the checkpoint's in what the run trains and"
            f" tests on:\n{lines}\nStart a new run (another output_dir) instead."
        )
    legit = [c for c in changes if c.kind == "legitimate"]
    if legit and not allow:
        lines = "\n".join(f"  {c.describe()}" for c in legit)
        raise CheckpointError(
            f"the config differs from the checkpoint's:\n{lines}\nPass {ALLOW_FLAG} to continue"
            " with the new values (the learning-rate schedule is recomputed for them, and the"
            " change is recorded in results.json), or restore the old values."
        )
    return legit


# --- groups seen in training ---------------------------------------------------------------


def group_ids(meta: Mapping[str, Tensor], key: str | None) -> Tensor | None:
    """Sorted unique values of ``meta[key]`` (int64 on the CPU), or None without a group key."""
    if key is None or key not in meta:
        return None
    values = meta[key].detach().cpu().long()
    return torch.unique(values[values >= 0])


@dataclass(frozen=True)
class Groups:
    """The groups (people, recordings) a split holds, by name, and where the names are unique.

    Names, not indices: an index depends on which groups the data lists, so dropping one person
    from a manifest would shift every later index onto another person.
    """

    key: str
    source: str
    names: tuple[str, ...]

    @classmethod
    def of(
        cls, meta: Mapping[str, Tensor], key: str | None, names: Sequence[str] | None,
        source: str,
    ) -> Groups | None:
        """The groups of a split's ``meta``; ``names[i]`` is index i's name (None: the index)."""
        ids = group_ids(meta, key)
        if ids is None or key is None:
            return None
        shown = [str(int(i)) if names is None else str(names[int(i)]) for i in ids]
        return cls(key, source, tuple(shown))

    def to_state(self) -> dict[str, Any]:
        """How a checkpoint stores them (strings only: loads with ``weights_only=True``)."""
        return {
            "group_key": self.key, "group_source": self.source, "train_groups": list(self.names),
        }

    @classmethod
    def from_state(cls, ckpt: Mapping[str, Any]) -> Groups | Tensor | None:
        """A checkpoint's training groups: by name, or (written before names were stored) the
        int64 index tensor, or None when it records none."""
        key = str(ckpt.get("group_key") or "")
        stored = ckpt.get("train_groups")
        if not key or stored is None:
            return None
        if isinstance(stored, Tensor):
            return stored
        return cls(key, str(ckpt.get("group_source") or ""), tuple(str(n) for n in stored))

    def where(self) -> str:
        return f" of {self.source}" if self.source else ""


def _listed(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def check_no_overlap(trained: Groups, test: Groups, split: str) -> bool:
    """Refuse a ``split`` that shares any group, by name, with the checkpoint's training split.

    Returns False when the two come from different sources (another data set: nobody can be
    compared, and names alike are different people), True when they were compared.
    """
    if trained.source != test.source or trained.key != test.key:
        return False
    seen = set(trained.names)
    shared = [n for n in test.names if n in seen]
    if shared:
        raise CheckpointError(
            f"the {split!r} split shares {len(shared)} of its {len(test.names)} {test.key}s with"
            f" the checkpoint's training split ({test.key}s {_listed([repr(n) for n in shared])}"
            f"{test.where()}): scoring them would leak training data into the result. Evaluate"
            " on the split the run held out (same data, fold and seeds), or on data the run never"
            " saw."
        )
    return True


def check_no_overlap_by_index(trained: Tensor, key: str, test: Tensor, split: str) -> None:
    """The check for a checkpoint that stores its groups as indices (written before names were
    stored): right only while the data lists the same groups as in training."""
    shared = test[torch.isin(test, trained.long())]
    if shared.numel():
        raise CheckpointError(
            f"the {split!r} split shares {shared.numel()} of its {test.numel()} {key}s with the"
            f" checkpoint's training split ({key} indices"
            f" {_listed([str(int(v)) for v in shared])}; this checkpoint predates stored {key}"
            " names, so they are compared by position in the data): scoring them would leak"
            " training data into the result. Evaluate on the split the run held out (same data,"
            " fold and seeds), or on data the run never saw."
        )
