"""``mtlkit predict``: a trained run on new input files, one output row per file.

Only the model is rebuilt from the config (:func:`mtlkit.build.build_model`: no weighter,
optimizer or run folder), and the checkpoint is checked against it. The heads' class names and
the input layout come from the data when it can be set up (and must then agree with the
checkpoint's), else from the checkpoint alone (:func:`checkpoint_data`). Files are read by the
run's dataset, so new images go through the same decoding as the training images; a dataset offers
that by implementing :class:`mtlkit.data.ReadsInputFiles` (also importable from here), and says
what it had to convert (another colour mode or size), which is counted and reported, or refused
with ``strict_inputs``. Each task turns its head output into row values
(:meth:`mtlkit.task.Task.predict`); nothing here knows which tasks exist.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mtlkit.data import Conversion as Conversion  # the interface's old home: still importable
from mtlkit.data import InputFile, InputSample, ReadsInputFiles, UsesDataInfo
from mtlkit.errors import CapabilityError, CheckpointError, ConfigError, DataError
from mtlkit.notices import notice

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from mtlkit.build import BuiltModel
    from mtlkit.config import RunConfig
    from mtlkit.data import DataSplits
    from mtlkit.layout import InputLayout
    from mtlkit.plugins import PluginHost

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
"""Output file suffix -> format."""
BadImagePolicy = Literal["error", "skip"]
_SHOWN = 3


# --- the run ---------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    """A run's model rebuilt from its config with a checkpoint's weights, in eval mode."""

    built: BuiltModel
    """The model, its tasks and the data (or the checkpoint's stand-in) that sized its heads."""
    checkpoint: Path
    step: int
    recorded: dict[str, dict[str, Any]]
    """Each task's validation metrics at the checkpoint's step (empty where none were
    recorded): where a task finds a decision threshold."""
    recorded_from: str
    """Where ``recorded`` was found, for messages."""
    layout: InputLayout
    """What a stored sample is and how it becomes model input."""
    from_checkpoint: bool = False
    """True when the data could not be set up: class names and layout are the checkpoint's."""


def load_run(
    config: RunConfig,
    checkpoint: str | Path,
    host: PluginHost | None = None,
    *,
    purpose: Literal["predict", "export", "evaluate"] = "predict",
) -> LoadedRun:
    """Build the model of ``config`` and load ``checkpoint``'s weights into it.

    Nothing else of the run is built (no weighter, optimizer or run folder). The data is set up
    as for training when it can be; when it cannot (it is not on disk), the class names and input
    layout the checkpoint stores stand in for it, with a notice. A missing or unsafe file, a
    checkpoint of other tasks, heads of other sizes, and class names that differ from the data's
    are errors naming what differs; ``purpose`` names the command in notices.
    """
    from mtlkit.build import build_model
    from mtlkit.checkpoint import load_checkpoint
    from mtlkit.checkpointing import check_checkpoint, load_weights
    from mtlkit.layout import InputLayout

    path = Path(checkpoint)
    state = load_checkpoint(path)
    try:
        built = build_model(config, host)
    except DataError as exc:
        data, layout = checkpoint_data(state, config, str(exc))
        notice(
            f"{purpose}: the data could not be set up ({exc}); using the class names and input"
            f" layout ({layout.describe()}) stored in {path.name}"
        )
        built = build_model(config, host, data=data)
        from_checkpoint = True
    else:
        layout = InputLayout.measure(built.data.train)
        from_checkpoint = False
    check_checkpoint(state, built, purpose=purpose, split="")
    _check_data_info(state, built)
    load_weights(state, built, {"model": built.model})
    built.model.eval()
    step = int(state.get("train_state", {}).get("step", 0))
    recorded, where = recorded_metrics(state, path)
    return LoadedRun(built, path, step, recorded, where, layout, from_checkpoint)


def checkpoint_data(
    state: Mapping[str, Any], config: RunConfig, reason: str
) -> tuple[DataSplits, InputLayout]:
    """Stand-in splits built from what the checkpoint stores (``data_info``, ``input_layout``):
    enough to build the model with the heads it was trained with, and to prepare inputs as
    training did. A CheckpointError saying what is missing when the checkpoint (an older run's)
    does not store it; ``reason`` says why the data itself could not be used."""
    import torch

    from mtlkit.data import DataSplits, InMemoryDataset
    from mtlkit.layout import InputLayout
    from mtlkit.task import MISSING_LABEL

    info_raw, layout_raw = state.get("data_info"), state.get("input_layout")
    info_raw = info_raw if isinstance(info_raw, str) else ""
    layout_raw = layout_raw if isinstance(layout_raw, str) else ""
    missing = [
        what
        for what, raw in (("class names (data_info)", info_raw), ("input layout", layout_raw))
        if not raw
    ]
    if missing:
        raise CheckpointError(
            f"the data could not be set up ({reason}), and the checkpoint does not record its"
            f" {' or its '.join(missing)}, which stand in for the data (a checkpoint written"
            " before mtlkit stored them, or one whose samples could not be measured): make the"
            " training data available again (where the config says, or -o data.<option>=PATH)"
        )
    layout = InputLayout.from_json(layout_raw)
    try:
        prepare = layout.prepare_fn()
    except DataError as exc:
        raise CheckpointError(f"the data could not be set up ({reason}), and {exc}") from None
    try:
        info = json.loads(info_raw)
    except ValueError as exc:
        raise CheckpointError(f"the checkpoint's data_info is unreadable ({exc})") from None
    # as many rows as a training batch (views of one zero sample: no memory), so nothing
    # downstream mistakes the stand-in for a tiny training set
    rows = max(1, config.trainer.batch_size)
    inputs = layout.like().unsqueeze(0).expand(rows, *layout.sample_shape)
    missing_label = torch.full((1,), MISSING_LABEL, dtype=torch.long).expand(rows)
    split = InMemoryDataset(
        inputs=inputs,
        targets={t.target_key: missing_label for t in config.tasks},
        prepare=prepare,
    )
    return DataSplits(train=split, val=split, info=info), layout


def _check_data_info(state: Mapping[str, Any], built: BuiltModel) -> None:
    """The class names each head was trained with must be the data's now: a head of the same
    size over differently named or ordered classes would load and silently mislabel."""
    raw = state.get("data_info")
    if not isinstance(raw, str):
        notice(
            f"the checkpoint does not record its class names (an older run): predictions use the"
            f" data's current ones ({built.config.data.name!r})"
        )
        return
    stored = json.loads(raw)
    for task, key in zip(built.tasks, built.target_keys):
        old = (stored.get(key) or {}).get("class_names")
        new = (built.data.info.get(key) or {}).get("class_names")
        if old is not None and new is not None and list(old) != list(new):
            raise CheckpointError(
                f"checkpoint does not fit this config: task {task.name!r} was trained on classes"
                f" {_short(old)} but the data now gives {_short(new)} (another dataset, fold or"
                " class list?)"
            )


def _short(names: Sequence[Any]) -> str:
    shown = ", ".join(str(n) for n in list(names)[:6])
    more = f", ... ({len(names)} in all)" if len(names) > 6 else ""
    return f"[{shown}{more}]"


def recorded_metrics(
    state: Mapping[str, Any], path: Path
) -> tuple[dict[str, dict[str, Any]], str]:
    """The validation metrics recorded at the checkpoint's step, and where they were found.

    The checkpoint's own history first, then the run folder's ``epochs.jsonl`` (``best.pt`` is
    written just before its epoch's row), then ``results.json`` when its final evaluation is of
    these weights (``selected: last`` at the same step).
    """
    ts = state.get("train_state") or {}
    step = int(ts.get("step", 0))
    try:
        history = json.loads(ts.get("history", "[]"))
    except (TypeError, ValueError):
        history = []
    for row in reversed(history):
        if row.get("step") == step and isinstance(row.get("val"), dict):
            return row["val"], f"the checkpoint's validation metrics at step {step}"
    epochs = path.parent / "epochs.jsonl"
    with contextlib.suppress(OSError, ValueError):
        for line in reversed(epochs.read_text().splitlines()):
            row = json.loads(line) if line.strip() else {}
            if row.get("step") == step and isinstance(row.get("val"), dict):
                return row["val"], f"{epochs} (validation, step {step})"
    results = path.parent / "results.json"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(results.read_text())
        val = (data.get("metrics") or {}).get("val")
        if data.get("steps") == step and data.get("selected") == "last" and isinstance(val, dict):
            return val, f"{results} (validation, step {step})"
    return {}, f"nowhere: no validation metrics at step {step}"


def input_reader(run: LoadedRun) -> ReadsInputFiles:
    """The run's dataset, as the reader of new files (a CapabilityError when it cannot)."""
    built = run.built
    resolved = built.resolved.data
    module = resolved.cls(resolved.options)
    if not isinstance(module, ReadsInputFiles):
        raise CapabilityError(
            f"dataset {built.config.data.name!r} ({resolved.cls.__name__}) cannot read input"
            " files for predict (it does not implement mtlkit.ReadsInputFiles)"
        )
    if isinstance(module, UsesDataInfo):
        module.use_data_info(built.data.info)
    return module


# --- predicting ------------------------------------------------------------------------------


@dataclass
class Predictions:
    """Every input's row, the per-row arrays, and the outputs pairs are scored from."""

    rows: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]
    """``<task>.<name>`` -> ``[N, ...]`` float32, row i for input i (NaN for a skipped one)."""
    outputs: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    """Task -> its inference outputs over the readable inputs (in row order)."""
    position: dict[str, int] = field(default_factory=dict)
    """Input name (and absolute path) -> position in ``outputs``; skipped inputs are absent."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Input name -> why it could not be read."""
    converted: dict[str, str] = field(default_factory=dict)
    """Input name -> what it needed to become the model's input (another mode, another size)."""
    conversion_counts: dict[str, int] = field(default_factory=dict)
    """Kind of conversion (``colour (RGB) to grayscale``, ``resized``) -> inputs that had it."""


def list_inputs(reader: ReadsInputFiles, sources: Sequence[str]) -> list[InputFile]:
    """Every file the sources name, in order; a file named twice is kept once (with a notice)."""
    if not sources:
        raise ConfigError("predict: give at least one input (an image, a folder or a manifest)")
    files: list[InputFile] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for source in sources:
        for item in reader.list_input_files(source):
            key = os.path.abspath(item.path)
            if key in seen:
                repeated.append(item.name)
                continue
            seen.add(key)
            files.append(item)
    if repeated:
        notice(f"{len(repeated)} input(s) named twice, predicted once: {_short(repeated)}")
    return files


def _batches(items: Sequence[InputFile], size: int) -> Iterator[Sequence[InputFile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read(
    reader: ReadsInputFiles, item: InputFile, like: Tensor, strict: str | None
) -> InputSample:
    """One file as a sample; with ``strict`` (the model's input, described) a file that needs
    converting is a DataError, like an unreadable one."""
    read = reader.read_input_file(item.path, like)
    sample = read if isinstance(read, InputSample) else InputSample(read)
    if strict is not None and sample.conversions:
        raise DataError(
            f"{item.path}: {sample.describe()}: --strict-inputs refuses inputs that are not"
            f" already the model's {strict}"
        )
    return sample


def predict_files(
    run: LoadedRun,
    sources: Sequence[str],
    *,
    on_bad_image: BadImagePolicy = "error",
    batch_size: int | None = None,
    strict_inputs: bool = False,
) -> Predictions:
    """Predict every file the sources name; an unreadable file stops it (``error``) or becomes a
    row with an ``error`` and no predictions (``skip``), so the rows always match the inputs.

    A file converted to fit the model (another colour mode or size) is predicted, named in its
    row's ``converted`` column and counted in a notice; ``strict_inputs`` makes it unreadable
    instead (stopped or skipped as above).
    """
    import numpy as np
    import torch

    built = run.built
    reader = input_reader(run)
    files = list_inputs(reader, sources)
    like = run.layout.like()
    strict = run.layout.describe() if strict_inputs else None
    size = batch_size or built.config.trainer.eval_batch_size
    rows: list[dict[str, Any]] = []
    good_rows: list[int] = []
    arrays: dict[str, list[np.ndarray]] = {}
    outputs: dict[str, dict[str, list[Tensor]]] = {t.name: {} for t in built.tasks}
    result = Predictions(rows=rows, arrays={})
    with torch.no_grad():
        for chunk in _batches(files, size):
            good: list[tuple[InputFile, Tensor]] = []
            for item in chunk:
                try:
                    read = _read(reader, item, like, strict)
                except DataError as exc:
                    where = f"{item.origin}: " if item.origin else ""
                    if on_bad_image == "error":
                        raise DataError(
                            f"{where}{exc} (pass --on-bad-image skip to predict the others)"
                        ) from None
                    result.skipped[item.name] = str(exc)
                    continue
                good.append((item, read.sample))
                if read.conversions:
                    result.converted[item.name] = read.describe()
                    for kind in dict.fromkeys(c.kind for c in read.conversions):
                        counts = result.conversion_counts
                        counts[kind] = counts.get(kind, 0) + 1
            predicted = iter(_run_batch(built, [x for _, x in good], outputs, arrays))
            for item in chunk:
                row: dict[str, Any] = {"index": len(rows), "path": item.name}
                if item.name in result.skipped:
                    row["converted"] = ""
                    row["error"] = result.skipped[item.name]
                else:
                    result.position[item.name] = len(good_rows)
                    result.position.setdefault(os.path.abspath(item.path), len(good_rows))
                    good_rows.append(len(rows))
                    row.update(next(predicted))
                    row["converted"] = result.converted.get(item.name, "")
                    row["error"] = ""
                rows.append(row)
    if not good_rows:
        raise DataError(f"none of the {len(files)} input file(s) could be read")
    for key, parts in arrays.items():
        block = np.concatenate(parts)
        full = np.full((len(rows), *block.shape[1:]), np.nan, dtype=np.float32)
        full[good_rows] = block
        result.arrays[key] = full
    result.outputs = {
        task: {k: torch.cat(v) for k, v in outs.items()} for task, outs in outputs.items()
    }
    if result.converted:
        notice(conversion_notice(result, len(files), run.layout.describe()))
    if result.skipped:
        first = "; ".join(list(result.skipped.values())[:_SHOWN])
        notice(
            f"skipped {len(result.skipped)} unreadable input(s) (--on-bad-image skip); their"
            f" rows carry the error: {first}"
        )
    return result


def conversion_notice(result: Predictions, total: int, model_input: str) -> str:
    """How many inputs were converted to fit the model, by kind, with the first few named."""
    kinds = ", ".join(f"{n} {kind}" for kind, n in result.conversion_counts.items())
    first = "; ".join(f"{name}: {what}" for name, what in list(result.converted.items())[:_SHOWN])
    return (
        f"converted {len(result.converted)} of {total} input(s) to the model's {model_input}"
        f" input ({kinds}), e.g. {first}; the rows' 'converted' column names each, and"
        " --strict-inputs refuses such inputs"
    )


def _run_batch(
    built: BuiltModel,
    samples: list[Tensor],
    outputs: dict[str, dict[str, list[Tensor]]],
    arrays: dict[str, list[np.ndarray]],
) -> list[dict[str, Any]]:
    """The model on one batch of stored samples; returns one row dict per sample and appends
    the batch's arrays and inference outputs."""
    import torch

    if not samples:
        return []
    stored = torch.stack(samples)
    prepare = built.data.train.prepare
    x = prepare(stored) if prepare is not None else stored.float()
    _, heads = built.model(x.to(built.device))
    rows: list[dict[str, Any]] = [{} for _ in samples]
    for task in built.tasks:
        named = task.inference_outputs(heads[task.name])
        inference = {k: v.detach().cpu() for k, v in named.items()}
        for key, value in inference.items():
            outputs[task.name].setdefault(key, []).append(value)
        pred = task.predict(inference)
        for key, values in pred.columns.items():
            column = task.name if key == "" else f"{task.name}.{key}"
            for row, value in zip(rows, values):
                row[column] = value
        for key, value in pred.arrays.items():
            arrays.setdefault(f"{task.name}.{key}", []).append(
                value.detach().float().cpu().numpy()
            )
    return rows


# --- verification pairs ----------------------------------------------------------------------


def read_pairs(path: str | Path, predictions: Predictions) -> list[tuple[str, str, int, int]]:
    """The pairs file's ``first,second`` rows as (name, name, position, position).

    Names are matched as the output's ``path`` column writes them, or as paths; a name that is no
    input, or an input that was skipped as unreadable, is an error naming the line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"pairs file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"pairs file {p} cannot be read ({exc})") from None
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [c.strip() for c in next(reader, [])]
    if "first" not in header or "second" not in header:
        raise DataError(
            f"pairs file {p} line 1: needs columns 'first' and 'second' (got {header})"
        )
    a, b = header.index("first"), header.index("second")
    known = [n for n in predictions.position if not os.path.isabs(n)] or list(predictions.position)
    pairs: list[tuple[str, str, int, int]] = []
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(a, b):
            raise DataError(
                f"pairs file {p} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        names = (row[a].strip(), row[b].strip())
        found = [_position(n, predictions, p, line, known) for n in names]
        pairs.append((names[0], names[1], found[0], found[1]))
    if not pairs:
        raise DataError(f"pairs file {p} holds no pairs")
    return pairs


def _position(
    name: str, predictions: Predictions, path: Path, line: int, known: list[str]
) -> int:
    for key in (name, os.path.abspath(name)):
        if key in predictions.position:
            return predictions.position[key]
    if name in predictions.skipped:
        raise DataError(
            f"pairs file {path} line {line}: {name!r} could not be read"
            f" ({predictions.skipped[name]})"
        )
    close = closest_inputs(name, known)
    hint = ""
    if len(close) == 1:
        hint = f" (did you mean {close[0]!r}?)"
    elif close:
        hint = f" (did you mean one of {', '.join(repr(c) for c in close)}?)"
    raise DataError(
        f"pairs file {path} line {line}: {name!r} is not one of the {len(known)} inputs{hint};"
        " name images as the output's 'path' column does"
    )


def closest_inputs(name: str, known: Sequence[str]) -> list[str]:
    """The inputs a pairs file probably meant by ``name``: those with its file name (a bare
    ``face1.png`` for ``images/face1.png``, up to three), else the closest file name, else the
    closest whole name. Whole paths alone never match a bare name: the folders dominate."""
    base = os.path.basename(name)
    same = [k for k in known if os.path.basename(k) == base]
    if same:
        return same[:_SHOWN]
    by_base: dict[str, str] = {}
    for k in known:
        by_base.setdefault(os.path.basename(k), k)
    close = difflib.get_close_matches(base, list(by_base), n=1)
    if close:
        return [by_base[close[0]]]
    return difflib.get_close_matches(name, list(known), n=1)


def score_pairs(
    run: LoadedRun,
    predictions: Predictions,
    pairs_file: str | Path,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """One row per pair: the names and every comparing task's columns (score, decision...)."""
    import torch

    pairs = read_pairs(pairs_file, predictions)
    first = torch.tensor([p[2] for p in pairs], dtype=torch.long)
    second = torch.tensor([p[3] for p in pairs], dtype=torch.long)
    rows: list[dict[str, Any]] = [{"first": p[0], "second": p[1]} for p in pairs]
    scored = []
    for task in run.built.tasks:
        columns = task.score_pairs(
            predictions.outputs[task.name],
            first,
            second,
            run.recorded.get(task.name, {}),
            threshold,
        )
        if columns is None:
            continue
        scored.append(task.name)
        for key, values in columns.items():
            for row, value in zip(rows, values):
                row[f"{task.name}.{key}"] = value
    if not scored:
        raise CapabilityError(
            f"--pairs: none of this run's tasks compares samples ({run.built.task_ids})"
        )
    if threshold is None:
        notice(f"pairs scored with the threshold recorded in {run.recorded_from}")
    return rows


# --- writing ---------------------------------------------------------------------------------


def output_format(out: str | Path) -> str:
    """``csv`` or ``jsonl`` from the output's suffix (an error for any other)."""
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"--out {out}: unknown output format {suffix or '(no suffix)'!r}; use one of"
            f" {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def output_paths(out: str | Path, array_keys: Sequence[str], pairs: bool) -> dict[str, Path]:
    """Every file one prediction writes: the rows, one ``.npy`` per array, the pairs rows."""
    p = Path(out)
    paths = {"rows": p}
    for key in array_keys:
        paths[key] = p.with_name(f"{p.stem}.{key}.npy")
    if pairs:
        paths["pairs"] = p.with_name(f"{p.stem}.pairs{p.suffix}")
    return paths


def refuse_existing(paths: Sequence[Path], force: bool) -> None:
    """Never overwrite a result silently: an existing output is an error without ``--force``."""
    if force:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ConfigError(
            f"output exists: {', '.join(existing)}; choose another --out or pass --force to"
            " replace it"
        )


def format_rows(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """Rows as CSV (header from every row's keys, in first-seen order) or JSON lines."""
    if fmt == "jsonl":
        return "".join(json.dumps(dict(r), default=_plain) + "\n" for r in rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return buf.getvalue()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_outputs(files: Mapping[Path, bytes | str]) -> None:
    """Write every file to a temporary name beside it, then rename them all: an error or a
    crash midway leaves no half-written result and never touches an existing one."""
    staged: list[tuple[str, Path]] = []
    try:
        for target, content in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in ``.npy`` format, in memory (written with the other files at once)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
