"""``mtlkit export``: a trained run's backbone and heads as ONNX, TorchScript or a torch.export
program, with a sidecar JSON that says how to feed it and what it returns.

The exported model takes the prepared input (``[B, ...]`` float32, what the run's dataset feeds
the model) and returns every task's inference outputs (:meth:`mtlkit.task.Task.inference_outputs`)
in a fixed order, named ``<task>.<output>``; the batch size is free. After writing, the file is
loaded back and run on samples of the run's data (seeded random pixels when the run was rebuilt
from its checkpoint alone), and its outputs are compared with the PyTorch model's: a difference
beyond :data:`TOLERANCE` is an error, and the measured difference is recorded in the sidecar.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlkit.errors import CapabilityError, ConfigError, MtlkitError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from mtlkit.predict import LoadedRun

FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
"""The file suffix each format's loaders expect (torch.export.load insists on ``.pt2``)."""
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
"""How close an exported model's float32 outputs must be to the PyTorch model's, elementwise:
``|exported - torch| <= atol + rtol * |torch|`` (measured differences are ~1e-6 on CPU)."""
CHECK_SAMPLES = 8
INPUT_NAME = "input"
EXTRA_HINT = "pip install 'mtlkit[export]'"


class ExportError(MtlkitError):
    """An export failed, or the exported model disagrees with the PyTorch model."""


def inference_module(run: LoadedRun) -> tuple[nn.Module, list[str]]:
    """The run's model as a module returning a flat tuple of tensors, and the outputs' names."""
    from torch import nn

    tasks = list(run.built.tasks)
    model = run.built.model

    class InferenceModel(nn.Module):
        """Backbone + heads -> every task's inference outputs, flattened in a fixed order."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            _, heads = self.model(x)
            flat: list[Tensor] = []
            for task in tasks:
                flat.extend(task.inference_outputs(heads[task.name]).values())
            return tuple(flat)

    module = InferenceModel().eval()
    names: list[str] = []
    example = example_inputs(run, 2)
    import torch

    with torch.no_grad():
        _, heads = model(example)
    for task in tasks:
        names += [f"{task.name}.{k}" for k in task.inference_outputs(heads[task.name])]
    return module, names


def example_inputs(run: LoadedRun, count: int = CHECK_SAMPLES) -> Tensor:
    """Up to ``count`` prepared samples of the run's data (test split first): what the exported
    model is traced with and checked on. A run rebuilt from its checkpoint alone has no data:
    seeded random samples of the stored layout, prepared as training prepared them."""
    import torch

    data = run.built.data
    if run.from_checkpoint:
        split = data.train
        stored = run.layout.random_samples(max(2, count))
        prepare = split.prepare
        x = prepare(stored) if prepare is not None else stored.float()
        return x.to(run.built.device)
    split = data.test if data.test is not None and len(data.test) else data.train
    n = max(2, min(count, len(split)))
    index = torch.arange(n) % len(split)
    return split.batch(index)["input"].to(run.built.device)


def preprocessing(run: LoadedRun) -> dict[str, Any]:
    """How a raw sample becomes the model's input, from the run's input layout.

    For uint8 images ``[C, H, W]`` whose ``prepare`` is ``(x / 255 - mean) / std`` per channel
    (every pixel value checked, :meth:`mtlkit.layout.InputLayout.mean_std`), the mean and std
    are recovered; any other ``prepare`` is reported as such, with the input's shape.
    """
    layout = run.layout
    out: dict[str, Any] = {
        "name": INPUT_NAME,
        "shape": ["batch", *layout.input_shape],
        "dtype": layout.input_dtype,
        "stored_sample": {"shape": list(layout.sample_shape), "dtype": layout.sample_dtype},
    }
    if layout.sample_dtype != "uint8" or len(layout.sample_shape) != 3:
        out["normalisation"] = "none recorded: the data's samples are not uint8 images"
        return out
    c, h, w = layout.sample_shape
    out.update(channels=c, height=h, width=w, colour="grayscale" if c == 1 else "RGB")
    if layout.prepare == "float":
        out["normalisation"] = "x (uint8 as float, unscaled)"
        return out
    found = layout.mean_std()
    if found is None:
        out["normalisation"] = "the dataset's own (not a per-channel (x/255 - mean)/std)"
        return out
    out["mean"] = [round(v, 6) for v in found[0]]
    out["std"] = [round(v, 6) for v in found[1]]
    out["normalisation"] = "(pixel / 255 - mean) / std per channel, NCHW"
    if len(layout.input_shape) == 1:
        out["normalisation"] += ", then flattened to [B, C*H*W]"
    return out


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CapabilityError(f"exporting to ONNX needs {module!r}: {EXTRA_HINT}")


def _save(module: nn.Module, example: Tensor, fmt: str, path: Path, names: list[str]) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            for dep in ("onnx", "onnxscript"):
                _require(dep)
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
        elif fmt == "torchscript":
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(path))
        else:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))


def run_exported(fmt: str, path: Path, x: Tensor) -> list[Tensor]:
    """The exported file loaded back and run on ``x`` (ONNX through onnxruntime)."""
    import torch

    if fmt == "onnx":
        _require("onnxruntime")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results = session.run(None, {INPUT_NAME: x.detach().cpu().numpy()})
        return [torch.from_numpy(r) for r in results]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            loaded = torch.jit.load(str(path), map_location="cpu")
        else:
            loaded = torch.export.load(str(path)).module()
        with torch.no_grad():
            return [t.detach().cpu() for t in loaded(x.detach().cpu())]


def compare(
    reference: Sequence[Tensor], exported: Sequence[Tensor], names: Sequence[str]
) -> dict[str, float]:
    """Max absolute difference per output; an ExportError past :data:`TOLERANCE`."""
    import torch

    diffs: dict[str, float] = {}
    for name, ref, got in zip(names, reference, exported):
        ref, got = ref.detach().cpu().float(), got.float()
        if ref.shape != got.shape:
            raise ExportError(
                f"exported output {name!r} has shape {tuple(got.shape)}, the model's"
                f" {tuple(ref.shape)}"
            )
        diffs[name] = float((ref - got).abs().max()) if ref.numel() else 0.0
        if not torch.allclose(got, ref, **TOLERANCE):
            raise ExportError(
                f"exported output {name!r} differs from the PyTorch model by up to"
                f" {diffs[name]:.3g} (tolerance atol {TOLERANCE['atol']}, rtol"
                f" {TOLERANCE['rtol']})"
            )
    return diffs


def sidecar_path(out: str | Path) -> Path:
    """The sidecar JSON of an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    p = Path(out)
    return p.with_name(p.name + ".json")


def check_target(fmt: str, out: str | Path) -> Path:
    """The output path, once the format is known and the suffix is the one its loaders expect."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = Path(out)
    if target.suffix != SUFFIXES[fmt]:
        raise ConfigError(
            f"--out {out}: a {fmt} file must end in {SUFFIXES[fmt]} (its loaders expect it)"
        )
    return target


def export_run(run: LoadedRun, fmt: str, out: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Export, check against the PyTorch model, and write the file and its sidecar; returns the
    sidecar's content. Nothing is written unless the check passes, and an existing file is
    replaced only with ``force``."""
    import torch

    from mtlkit import __version__
    from mtlkit.predict import refuse_existing, write_outputs

    target = check_target(fmt, out)
    sidecar = sidecar_path(target)
    refuse_existing([target, sidecar], force)
    module, names = inference_module(run)
    module = module.cpu()
    example = example_inputs(run).cpu()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _save(module, example[:2], fmt, tmp, names)
        except MtlkitError:
            raise
        except Exception as exc:  # the exporters raise many kinds; the reason is what matters
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {first}") from exc
        with torch.no_grad():
            reference = module(example)
        diffs = compare(reference, run_exported(fmt, tmp, example), names)
        tasks = run.built.tasks
        outputs = []
        for name, ref in zip(names, reference):
            task_name, _, key = name.partition(".")
            task = next(t for t in tasks if t.name == task_name)
            info = task.describe_outputs(run.recorded.get(task.name, {})).get(key, {})
            shape = ["batch", *ref.shape[1:]]
            outputs.append({"name": name, "task": task.name, "shape": shape, **info})
        content = {
            "format": fmt,
            "file": target.name,
            "input": preprocessing(run),
            "outputs": outputs,
            "tasks": list(run.built.task_ids),
            "checkpoint": {"path": str(run.checkpoint), "step": run.step},
            "class_names_and_layout_from": "checkpoint" if run.from_checkpoint else "data",
            "recorded_metrics": {"source": run.recorded_from, "val": run.recorded},
            "check": {
                "samples": int(example.shape[0]),
                "inputs": "seeded random pixels (no data at hand)" if run.from_checkpoint
                else "samples of the run's data (test split first)",
                "max_abs_diff": diffs,
                "tolerance": TOLERANCE,
                "runtime": "onnxruntime" if fmt == "onnx" else "torch",
            },
            "versions": {"mtlkit": __version__, "torch": torch.__version__},
        }
        write_outputs({sidecar: json.dumps(content, indent=2, default=str) + "\n"})
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return content
