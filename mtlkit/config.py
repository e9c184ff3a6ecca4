"""Run configuration: pydantic models (stage 1) plus per-plugin options validation (stage 2)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomllib
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mtlkit.errors import ConfigError, RegistryError
from mtlkit.options import Options
from mtlkit.registry import COMPONENT_KINDS

if TYPE_CHECKING:
    from mtlkit.plugins import PluginHost


DEFAULT_ARCHITECTURE = "hps"
"""The architecture of a config that names none. A config dict leaves a plain ``{name: hps}``
out (:func:`config_to_dict`), so the configs, hashes and checkpoints written before
architectures existed stay the same."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """A plugin reference: ``name`` picks the class, every other field is that plugin's option."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskSpec(Component):
    """A task: ``id`` names it in logs (default: the plugin name); ``target`` is the data key."""

    id: str | None = None
    target: str | None = None

    @property
    def task_id(self) -> str:
        return self.id or self.name

    @property
    def target_key(self) -> str:
        return self.target or self.id or self.name


class OptimizerConfig(_Strict):
    name: Literal["adamw", "sgd", "rmsprop"] = Field(
        "adamw", description="rmsprop: TensorFlow 1's form (eps inside the root; the paper's code)"
    )
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop")
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    rmsprop_decay: float = Field(0.9, ge=0, lt=1, description="rmsprop: mean-square decay")
    rmsprop_eps: float = Field(1.0, gt=0, description="rmsprop: epsilon (TF1 and the paper: 1.0)")
    shared_lr_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="learning rate of the shared parameters (a pretrained trunk) as a fraction of"
        " lr; task heads and weighters keep lr. 1: one group, as before",
    )


class SchedulerConfig(_Strict):
    name: Literal["none", "cosine", "step"] = "none"
    step_size: int = Field(10, gt=0, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0, description="final learning rate (cosine)")


class LoaderConfig(_Strict):
    """How batches are read: in the main process, or decoded ahead in ``DataLoader`` workers.

    Changing these never changes what a run computes (a batch is a pure function of its
    position), so they are harmless on resume.
    """

    num_workers: int | None = Field(
        None,
        ge=0,
        description="worker processes decoding batches ahead; None: 0 for data held in memory,"
        " else up to 8 on CUDA or 4 on CPU, at most the cores per process minus one (at least 1)",
    )
    pin_memory: bool | None = Field(
        None, description="page-locked batches for faster host-to-GPU copies; None: on for CUDA"
    )
    persistent_workers: bool = Field(
        True, description="keep the workers (and their open files) from one epoch to the next"
    )
    prefetch_factor: int | None = Field(
        None, ge=1, description="batches each worker prepares ahead; None: torch's default (2)"
    )


class TrainerConfig(_Strict):
    epochs: int = Field(
        1, ge=1, description="passes over the training split (to score a checkpoint without"
        " training: mtlkit evaluate)"
    )
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    max_steps: int | None = Field(None, gt=0, description="stop after this many steps")
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0: none")
    checkpoint_epochs: int = Field(
        1, ge=0, description="epochs between checkpoints (last.pt); 0: only at the end"
    )
    handle_signals: bool = Field(
        True,
        description="on SIGINT/SIGTERM/SIGUSR1 finish the step, checkpoint and exit with code 75",
    )
    log_format: Literal["jsonl", "csv"] = "jsonl"
    log_every: int = Field(1, gt=0, description="steps between log flushes (rows are per step)")
    progress: Literal["auto", "on", "off"] = "auto"
    device: str = "cpu"
    precision: Literal["32", "bf16", "fp16"] = Field(
        "32", description="bf16 autocast (CPU/GPU) or fp16 autocast + GradScaler (GPU only)"
    )
    deterministic: bool = True
    num_threads: int | None = Field(None, gt=0)
    eval_every: int = Field(1, ge=0, description="epochs between validation passes; 0: never")
    select: Literal["last", "best"] = "last"
    select_metric: str | None = Field(None, description="'task/metric' on the val split")
    on_nonfinite: Literal["error", "skip"] = "error"
    plot: bool = True
    diagnostics: int = Field(
        0,
        ge=0,
        description="every N steps, log the cosine between the tasks' gradients w.r.t. the shared"
        " representation and their norm ratio (diag/* in steps.jsonl); 0: off",
    )
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    batched_backward: bool = Field(
        False,
        description="parameter-gradient methods: the T per-task backwards as one vmapped backward"
        " (is_grads_batched; same values); measured no faster on CPU, see docs/weighting.md",
    )

    @field_validator("epochs", mode="before")
    @classmethod
    def _no_untrained_result(cls, value: Any) -> Any:
        """0 epochs trained nothing yet wrote the untrained model's metrics as a run's result
        (exit 0); scoring a model without training is ``mtlkit evaluate``'s job."""
        if value == 0 and not isinstance(value, bool):
            raise ValueError(
                "0 epochs would train nothing and write an untrained model's metrics as this"
                " run's results; give 1 or more, or score a checkpoint with"
                " 'mtlkit evaluate CONFIG --checkpoint PATH'"
            )
        return value

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        """YAML reads a bare ``on``/``off`` as a boolean; accept that spelling."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class RunConfig(_Strict):
    """Everything a run needs; ``mtlkit config schema`` prints its JSON schema."""

    output_dir: str = "runs/default"
    seed: int = 0
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    backbone: Component
    architecture: Component = Field(
        default_factory=lambda: Component(name=DEFAULT_ARCHITECTURE),
        description="how the backbone and the heads form the model; default hps (hard sharing)",
    )
    tasks: list[TaskSpec] = Field(min_length=1)
    weighter: Component = Field(default_factory=lambda: Component(name="equal"))
    data: Component

    @model_validator(mode="after")
    def _unique_tasks(self) -> RunConfig:
        ids = [t.task_id for t in self.tasks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"task ids must be unique; repeated: {dupes} (set 'id' to tell apart)")
        if self.trainer.select == "best" and not self.trainer.select_metric:
            raise ValueError("trainer.select=best needs trainer.select_metric ('task/metric')")
        return self

    def task_ids(self) -> list[str]:
        return [t.task_id for t in self.tasks]


# --- loading ---------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse YAML or TOML with safe loaders only."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: cannot parse: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides in order; values are YAML, list items use an index.

    A value that parses to null (``~`` or ``null``) deletes the key from its mapping, so the field
    takes its default; ``key={...}`` replaces a whole section (e.g. ``weighter={name: equal}``).
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form dotted.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from None
        parts = key.strip().split(".")
        if value is None:
            _delete(data, parts, item)
        else:
            _set(data, parts, value, item)
    return data


def _set(data: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, parts[: depth + 1], create=True)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, parts)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a mapping")


def _delete(data: dict[str, Any], parts: list[str], item: str) -> None:
    """``key=~``: remove the key; one already absent is left absent, which is what was asked."""
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, dict) and node.get(part) is None:
            return
        node = _child(node, part, parts[: depth + 1], create=False)
    if isinstance(node, list):
        raise ConfigError(
            f"override {item!r}: a null value deletes a mapping key, not a list item;"
            f" set the whole list instead, e.g. -o '{'.'.join(parts[:-1])}=[...]'"
        )
    if not isinstance(node, dict):
        raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is not a mapping")
    node.pop(parts[-1], None)


def _index(node: list[Any], part: str, path: list[str]) -> int:
    try:
        i = int(part)
        node[i]
    except (ValueError, IndexError):
        raise ConfigError(
            f"override path {'.'.join(path)}: {part!r} is not an index of a list of {len(node)}"
        ) from None
    return i


def _child(node: Any, part: str, path: list[str], create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if not isinstance(node, dict):
        raise ConfigError(f"override path {'.'.join(path)}: parent is not a mapping")
    if part not in node or node[part] is None:
        if not create:
            raise ConfigError(f"override path {'.'.join(path)} does not exist")
        node[part] = {}
    return node[part]


def format_validation_error(exc: ValidationError, prefix: str = "", where: str = "") -> str:
    """One line per problem: ``path: message``, with the plugin named where relevant."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        path = ".".join(p for p in (prefix, loc) if p)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {path or '<root>'}: {msg}{where}")
    return "invalid config:\n" + "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    data: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read a file (or a mapping), apply overrides, validate stage 1."""
    raw = dict(data) if data is not None else {}
    if path is not None:
        raw = read_config_file(path)
    raw = apply_overrides(json.loads(json.dumps(raw)), overrides)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


# --- stage 2: plugin options ---------------------------------------------------------------


@dataclass
class Resolved:
    """A plugin class with its validated options."""

    cls: Any
    options: Options
    entry_dist: str


@dataclass
class ResolvedRun:
    backbone: Resolved
    tasks: dict[str, Resolved]
    weighter: Resolved
    data: Resolved
    architecture: Resolved

    def components(self) -> list[tuple[str, Resolved]]:
        """Every component with its config path (``tasks.<i>`` for each task), in the order
        of :data:`~mtlkit.registry.COMPONENT_KINDS`."""
        out: list[tuple[str, Resolved]] = []
        for kind in COMPONENT_KINDS:
            found = getattr(self, kind.config_key)
            if kind.many:
                out += [(f"{kind.config_key}.{i}", r) for i, r in enumerate(found.values())]
            else:
                out.append((kind.config_key, found))
        return out


def _resolve(host: PluginHost, kind: str, comp: Component, prefix: str) -> Resolved:
    registry = host.registry(kind)
    try:
        cls = registry.resolve(comp.name)
        dist = registry.entry(comp.name).dist
    except RegistryError as exc:
        raise ConfigError(f"{prefix}.name: {exc}") from None
    options_model: type[Options] = getattr(cls, "Options", Options)
    try:
        options = options_model.model_validate(comp.options())
    except ValidationError as exc:
        where = f" ({registry.kind} {comp.name!r} from {dist})"
        raise ConfigError(format_validation_error(exc, prefix, where)) from None
    return Resolved(cls, options, dist)


def resolve_run(config: RunConfig, host: PluginHost) -> ResolvedRun:
    """Stage 2: look up every plugin name and validate its options with its own model."""
    errors: list[str] = []
    out: dict[str, Any] = {k.config_key: {} for k in COMPONENT_KINDS if k.many}
    for kind in COMPONENT_KINDS:
        named = getattr(config, kind.config_key)
        parts = (
            [(f"{kind.config_key}.{i}", c) for i, c in enumerate(named)]
            if kind.many
            else [(kind.config_key, named)]
        )
        for prefix, comp in parts:
            try:
                resolved = _resolve(host, kind.plural, comp, prefix)
            except ConfigError as exc:
                errors.append(str(exc))
                continue
            if kind.many:
                key = comp.task_id if isinstance(comp, TaskSpec) else comp.name
                out[kind.config_key][key] = resolved
            else:
                out[kind.config_key] = resolved
    if errors:
        raise ConfigError("\n".join(errors))
    return ResolvedRun(**out)


def _later_defaults() -> dict[str, Any]:
    """Config paths added after 0.1 whose default reproduces what runs did before them."""
    return {
        "architecture": {"name": DEFAULT_ARCHITECTURE},
        "trainer.loader": LoaderConfig().model_dump(mode="json"),
        "trainer.batched_backward": False,
        "optimizer.shared_lr_scale": 1.0,
    }


def _drop_later_defaults(out: dict[str, Any]) -> dict[str, Any]:
    """Leave out each :func:`_later_defaults` path still at its default, so a config from before
    the field was added hashes and compares the same (a sweep's finished cells stay finished,
    a checkpoint's config diff stays empty)."""
    for path, default in _later_defaults().items():
        *parents, last = path.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node and node[last] == default:
            del node[last]
    return out


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A JSON-safe dict of the config (plugin options included); the default architecture
    without options is left out, so it hashes and compares like a config from before
    architectures (naming it or not is the same run)."""
    return _drop_later_defaults(json.loads(config.model_dump_json()))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a JSON tree by dotted path (list items by index)."""
    if isinstance(tree, Mapping):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in tree.items())
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    if not out and prefix:
        out[prefix] = tree
    return out


_IDENTITY_KEYS = ("name", "id", "target")
"""A component section's keys that say which component it is, not how it is set up."""


def _component_slot(tree: Any, path: str) -> tuple[Any, Any] | None:
    """The container holding component ``path`` (``data``, ``tasks.1``) and its key there."""
    node = tree
    *parents, last = path.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node, int(last)
    if isinstance(node, dict) and last in node:
        return node, last
    return None


def _respelled(section: dict[str, Any], options: Options) -> dict[str, Any]:
    """A component section with its identity keys kept and ``options`` spelled out in full."""
    keep = {k: section[k] for k in _IDENTITY_KEYS if k in section}
    return {**keep, **options.model_dump(mode="json")}


def resolved_config_dict(config: RunConfig, resolved: ResolvedRun) -> dict[str, Any]:
    """The config with each component's options validated and every default filled in."""
    out = json.loads(config.model_dump_json())
    for path, r in resolved.components():
        slot = _component_slot(out, path)
        assert slot is not None, path
        node, key = slot
        node[key] = _respelled(node[key], r.options)
    return _drop_later_defaults(out)


def reread_resolved(
    stored: dict[str, Any], config: RunConfig, resolved: ResolvedRun
) -> dict[str, Any]:
    """A resolved config stored by an earlier run, each component's options read again through
    this version's options model, so that a value an upgrade now spells out (``augment: true``
    -> the augmentation it stands for) compares as what it means now rather than as a change.

    A component under another name, or options this version rejects, stay as stored: the
    comparison then shows them as they are. Values already spelled out read back unchanged, so
    a default changed since the run still shows.
    """
    out = json.loads(json.dumps(stored))
    now = json.loads(config.model_dump_json())
    for path, r in resolved.components():
        slot, current = _component_slot(out, path), _component_slot(now, path)
        if slot is None or current is None or not isinstance(slot[0][slot[1]], dict):
            continue
        node, key = slot
        section = node[key]
        if section.get("name") != current[0][current[1]].get("name"):
            continue
        options = {k: v for k, v in section.items() if k not in _IDENTITY_KEYS}
        try:
            again = type(r.options).model_validate(options)
        except ValidationError:
            continue
        node[key] = _respelled(section, again)
    return _drop_later_defaults(out)
