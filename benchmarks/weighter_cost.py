"""Cost of every registered weighter relative to ``equal``: time per step and peak memory.

Every weighter drives the REAL training step (``Trainer.train_step``: the gradient engine, the
weighter, the optimizer step, ``after_step``) of its own ``Trainer``, all built from the same
config and seed, so they start from identical weights and see identical batches.

Time: interleaved rounds. In each round every weighter (and a hand-written equal-weight PyTorch
loop, as an anchor comparable with other libraries' figures) runs ``--steps`` steps on the same
batches, in an order rotated from round to round; the figure per weighter is the median (and
min-max) over rounds of ``time(weighter) / time(equal)`` within the round.

Peak memory: on the CPU, ``tracemalloc`` and ``resource`` do not see torch's allocations reliably
(torch allocates with its own allocator and ``ru_maxrss`` never goes down), so each weighter runs
in a FRESH subprocess: build the trainer, run two warm-up steps, reset the kernel's peak-RSS mark
(``echo 5 > /proc/self/clear_refs``), run ``--memory-steps`` steps and read ``VmHWM`` (peak resident
set) from ``/proc/self/status``. The figure is the peak RSS during training steps minus equal's,
compared with the issue's budget of T x the shared parameters (``T * D * 4`` bytes). On CUDA the
subprocess reads ``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/weighter_cost.py                       # resnet18, 48 px, batch 64, T=2
    python benchmarks/weighter_cost.py --model mlp --rounds 3 --steps 3
    python benchmarks/weighter_cost.py --weighters equal,famo,mgda --no-memory
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import summary, write_results

from mtlkit.config import load_config
from mtlkit.data import Batch
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

TASKS = ("a", "b")
NUM_CLASSES = 7
EXTRA_VARIANTS: dict[str, dict[str, Any]] = {
    "mgda-rep": {"name": "mgda", "rep": True},
    "aligned_mtl-rep": {"name": "aligned_mtl", "rep": True},
    "imtl-rep": {"name": "imtl", "rep": True},
}
"""Option variants measured besides every registered name (the 'UB' representation paths)."""
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "static": {"weights": {t: 1.0 for t in TASKS}},
}


# --- building ---------------------------------------------------------------------------------


def set_tasks(num_tasks: int) -> None:
    """T classification tasks named a, b (T = 2, as before) or t0 ... t{T-1}."""
    global TASKS
    TASKS = ("a", "b") if num_tasks == 2 else tuple(f"t{i}" for i in range(num_tasks))
    DEFAULT_OPTIONS["static"] = {"weights": {t: 1.0 for t in TASKS}}


def have_timm(host: PluginHost) -> bool:
    return "timm" in host.backbones


def backbone_config(model: str, image_size: int) -> dict[str, Any]:
    if model == "mlp":
        return {"name": "mlp", "in_features": 3 * image_size * image_size, "hidden": [512, 256]}
    return {"name": "timm", "model_name": model, "in_chans": 3, "img_size": image_size}


ENGINE = "_engine"
"""Key of a spec's gradient-engine attributes (set on the built trainer's engine)."""


def build_trainer(
    weighter: dict[str, Any], args: argparse.Namespace, run_dir: str, host: PluginHost
) -> Trainer:
    engine = weighter.get(ENGINE, {})
    weighter = {k: v for k, v in weighter.items() if k != ENGINE}
    trainer = _build_trainer(weighter, args, run_dir, host)
    for key, value in engine.items():
        setattr(trainer.engine, key, value)
    return trainer


def _build_trainer(
    weighter: dict[str, Any], args: argparse.Namespace, run_dir: str, host: PluginHost
) -> Trainer:
    cfg = {
        "output_dir": run_dir,
        "seed": 0,
        "trainer": {
            "progress": "off",
            "plot": False,
            "deterministic": False,
            "device": args.device,
        },
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "backbone": backbone_config(args.model, args.image_size),
        "tasks": [{"name": "classification", "id": t} for t in TASKS],
        "weighter": weighter,
        "data": {
            "name": "synthetic",
            "num_samples": 16,
            "num_features": 8,
            "num_classes": NUM_CLASSES,
        },
    }
    return Trainer(load_config(data=cfg), host)


def make_batches(
    n: int, batch: int, image_size: int, model: str, device: str, seed: int = 0
) -> list[Batch]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch, 3, image_size, image_size, generator=gen)
        if model == "mlp":
            x = x.reshape(batch, -1)
        out.append(
            Batch(
                input=x.to(device),
                targets={
                    t: torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
                    for t in TASKS
                },
                meta={},
            )
        )
    return out


def weighter_specs(host: PluginHost, only: list[str] | None) -> dict[str, dict[str, Any]]:
    specs = {
        name: {"name": name, **DEFAULT_OPTIONS.get(name, {})} for name in host.weighters.names()
    }
    specs.update({k: v for k, v in EXTRA_VARIANTS.items() if v["name"] in host.weighters})
    if only:
        missing = [n for n in only if n not in specs]
        if missing:
            raise SystemExit(f"unknown weighter(s) {missing}; available: {sorted(specs)}")
        specs = {n: specs[n] for n in only}
    if "equal" not in specs:
        specs = {"equal": {"name": "equal"}, **specs}
    return specs


def cheap_variants(
    specs: dict[str, dict[str, Any]], update_every: list[int], batched: bool
) -> dict[str, dict[str, Any]]:
    """Each selected method (but ``equal``) again with ``update_every: k`` and/or the engine's
    ``batched_backward`` (one vmapped backward for the T per-task gradients)."""
    out = dict(specs)
    for name, spec in specs.items():
        if name == "equal":
            continue
        for k in update_every:
            out[f"{name}-every{k}"] = {**spec, "update_every": k}
        if batched:
            out[f"{name}+batched"] = {**spec, ENGINE: {"batched_backward": True}}
    return out


# --- timing -----------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_trainer(trainer: Trainer, batches: list[Batch], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        result = trainer.train_step(b)
        assert result is not None
        trainer.state.step += 1
        trainer.state.batch += 1
    sync(device)
    return time.perf_counter() - t0


def run_hand(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], device: str
) -> float:
    """The anchor: a hand-written equal-weight loop on a copy of the same model."""
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        model.train()
        opt.zero_grad(set_to_none=True)
        features = model.backbone(b["input"])
        loss = sum(F.cross_entropy(model.heads[t](features), b["targets"][t]) for t in TASKS)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def time_all(
    specs: dict[str, dict[str, Any]], args: argparse.Namespace, host: PluginHost
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds in groups of ``--group-size`` methods, each group with its own
    ``equal`` (the ratio's reference and control) and its trainers freed afterwards: at large T
    every parameter-gradient trainer holds a ``[T, D]`` buffer, and all of them at once would not
    fit in memory (T = 20 on resnet18: about 0.9 GB each)."""
    batches = make_batches(args.steps, args.batch, args.image_size, args.model, args.device)
    others = [n for n in specs if n != "equal"]
    size = args.group_size or max(1, len(others))
    groups = [others[i : i + size] for i in range(0, len(others), size)] or [[]]
    out: dict[str, dict[str, Any]] = {}
    for g, group in enumerate(groups):
        print(f"group {g + 1}/{len(groups)}: {', '.join(group)}", file=sys.stderr, flush=True)
        part = {n: specs[n] for n in ("equal", *group)}
        timed = _time_group(part, args, host, batches, with_hand=g == 0)
        out.update({k: v for k, v in timed.items() if k != "equal" or g == 0})
    return out


def _time_group(
    specs: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    host: PluginHost,
    batches: list[Batch],
    with_hand: bool,
) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: build_trainer(spec, args, os.path.join(tmp, name), host)
            for name, spec in specs.items()
        }
        hand_model = copy.deepcopy(trainers["equal"].model)
        hand_opt = torch.optim.AdamW(hand_model.parameters(), lr=1e-3, weight_decay=0.0)
        runners: dict[str, Any] = {
            name: (lambda tr=tr: run_trainer(tr, batches, args.device))
            for name, tr in trainers.items()
        }
        if with_hand:
            runners["hand-written loop"] = lambda: run_hand(
                hand_model, hand_opt, batches, args.device
            )
        for name, run in runners.items():  # warm-up (allocations, lazy state, first solves)
            print(f"warm-up {name}", file=sys.stderr, flush=True)
            run()
        names = list(runners)
        seconds: dict[str, list[float]] = {n: [] for n in names}
        ratios: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            this: dict[str, float] = {}
            for name in order:
                this[name] = runners[name]()
            for name in names:
                seconds[name].append(this[name] / args.steps)
                ratios[name].append(this[name] / this["equal"])
            print(
                f"round {r + 1}/{args.rounds}: equal {this['equal'] / args.steps * 1e3:.1f}"
                " ms/step",
                file=sys.stderr,
                flush=True,
            )
        out = {}
        for name in names:
            tr = trainers.get(name)
            out[name] = {
                "ratio": summary(ratios[name]),
                "ms_per_step": {k: v * 1e3 for k, v in summary(seconds[name]).items()},
                "grads": tr.weighter.needs.grads if tr is not None else "none",
            }
        d = sum(p.numel() for p in trainers["equal"].model.shared_parameters())
        out["_shared_numel"] = {"value": d}
    return out


# --- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run in a fresh process: peak memory of training steps with one weighter."""
    host = PluginHost()
    spec = cheap_variants(weighter_specs(host, None), args.update_every, args.batched)[name]
    batches = make_batches(
        2 + args.memory_steps, args.batch, args.image_size, args.model, args.device
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(spec, args, tmp, host)
        run_trainer(trainer, batches[:2], args.device)  # warm-up: optimizer state, buffers
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run_trainer(trainer, batches[2:], args.device)
            return {
                "peak_mib": torch.cuda.max_memory_allocated() / 2**20,
                "base_mib": base / 2**20,
                "method": "torch.cuda.max_memory_allocated",
            }
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        run_trainer(trainer, batches[2:], args.device)
        return {
            "peak_mib": _status_kib("VmHWM") / 1024,
            "base_mib": base / 1024,
            "method": "VmHWM after clear_refs=5",
        }


def memory_all(specs: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for name in specs:
        print(f"memory {name}", file=sys.stderr, flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--memory-one",
            name,
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--image-size",
            str(args.image_size),
            "--memory-steps",
            str(args.memory_steps),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--tasks",
            str(args.tasks),
            *(["--update-every", *map(str, args.update_every)] if args.update_every else []),
            *(["--batched"] if args.batched else []),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --- report -----------------------------------------------------------------------------------


def markdown(timing: dict[str, Any], memory: dict[str, Any], args: argparse.Namespace) -> str:
    d = timing["_shared_numel"]["value"]
    budget = len(TASKS) * d * 4 / 2**20
    eq_peak = memory.get("equal", {}).get("peak_mib")
    lines = [
        f"Model `{args.model}`, {args.image_size} px, batch {args.batch}, T={len(TASKS)},"
        f" D={d:,} shared parameters, device {args.device}, threads {torch.get_num_threads()};"
        f" {args.rounds} interleaved rounds of {args.steps} steps; every row runs the real"
        " `Trainer.train_step`.",
        "",
        "| weighter | grads | time / equal: median | min | max | ms/step (median) |"
        " peak memory - equal (MiB) | within T x D budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [n for n in timing if not n.startswith("_")]
    rows.sort(key=lambda n: (n != "equal", n == "hand-written loop", timing[n]["ratio"]["median"]))
    for name in rows:
        t = timing[name]
        mem = memory.get(name, {})
        if "peak_mib" in mem and eq_peak is not None:
            delta = mem["peak_mib"] - eq_peak
            mem_cell = f"{delta:+.1f}"
            ok = "yes" if delta <= budget else "**no**"
        else:
            mem_cell, ok = ("n/a", "")
        lines.append(
            f"| {name} | {t['grads']} | {t['ratio']['median']:.3f} | {t['ratio']['min']:.3f} |"
            f" {t['ratio']['max']:.3f} | {t['ms_per_step']['median']:.1f} | {mem_cell} | {ok} |"
        )
    method = next((m.get("method") for m in memory.values() if "method" in m), "not measured")
    lines += [
        "",
        f"Budget T x D x 4 bytes = {budget:.1f} MiB. Peak memory method: {method}, each weighter"
        " in a fresh process, peak over the timed steps minus `equal`'s (same model, optimizer"
        " and batches); allocator noise is a few MiB.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        default=None,
        help="timm model name (default resnet18 when mtlkit-timm is installed), or mlp",
    )
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="steps per weighter per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weighters", default=None, help="comma-separated subset (equal is added)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--memory-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help="results file stem (default weighter_cost_<model>)")
    p.add_argument("--tasks", type=int, default=2, help="number of tasks T (classification)")
    p.add_argument("--group-size", type=int, default=0,
                   help="methods timed together with their own equal (0: all at once)")
    p.add_argument("--update-every", type=int, nargs="*", default=[],
                   help="also time each selected method with update_every: k (use --steps k)")
    p.add_argument("--batched", action="store_true",
                   help="also time each selected method with the engine's batched_backward")
    args = p.parse_args()
    set_tasks(args.tasks)
    torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = "resnet18" if have_timm(PluginHost()) else "mlp"
    if args.memory_one:
        print(json.dumps(memory_one(args.memory_one, args)))
        return
    host = PluginHost()
    specs = weighter_specs(host, args.weighters.split(",") if args.weighters else None)
    specs = cheap_variants(specs, args.update_every, args.batched)
    timing = time_all(specs, args, host)
    memory = {} if args.no_memory else memory_all(specs, args)
    md = markdown(timing, memory, args)
    payload = {"args": vars(args), "timing": timing, "memory": memory, "torch": torch.__version__}
    json_path, md_path = write_results(args.name or f"weighter_cost_{args.model}", payload, md)
    print(md)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
