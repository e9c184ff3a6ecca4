"""Cost of every registered architecture relative to ``hps``: time per step and peak memory.

Each (architecture, weighter) pair drives the REAL training step (``Trainer.train_step``) of its
own ``Trainer``, all built from the same config and seed and fed identical batches. Weighters:
``equal`` (one backward) and ``pcgrad`` (the ``[T, D]`` parameter-gradient path), so the table
shows what an architecture costs on both kinds of path; on the parameter path D is the
architecture's shared parameters, which differs between architectures.

Time: interleaved rounds, as ``weighter_cost.py``: in each round every pair runs ``--steps``
steps, in an order rotated (and reversed every other round); the figure is the median (min-max)
over rounds of ``time(arch, w) / time(hps, w)``. A second ``hps`` trainer per weighter is the
A/A control: its ratio shows the noise of the machine.

Peak memory: each pair in a fresh process, peak RSS over ``--memory-steps`` steps after a warm-up
(``VmHWM`` after ``clear_refs``; ``torch.cuda.max_memory_allocated`` on CUDA), minus ``hps``'s
with the same weighter.

    python benchmarks/arch_cost.py --tasks 2            # resnet18, 48 px, batch 64
    python benchmarks/arch_cost.py --tasks 5 --rounds 3 --steps 2
    python benchmarks/arch_cost.py --archs hps,branch --weighters equal --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import torch
import weighter_cost as wc
from _common import RESULTS, summary, write_results

from mtlkit.config import load_config
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

AA = "hps (A/A)"


def arch_names(host: PluginHost, only: list[str] | None) -> list[str]:
    names = ["hps", *[n for n in host.architectures.names() if n != "hps"]]
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise SystemExit(f"unknown architecture(s) {missing}; available: {names}")
        names = ["hps", *[n for n in only if n != "hps"]]
    return names


def build(arch: str, weighter: str, args: argparse.Namespace, run_dir: str,
          host: PluginHost) -> Trainer:
    cfg = {
        "output_dir": run_dir,
        "seed": 0,
        "trainer": {"progress": "off", "plot": False, "deterministic": False,
                    "device": args.device},
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "backbone": wc.backbone_config(args.model, args.image_size),
        "architecture": {"name": "hps" if arch == AA else arch},
        "tasks": [{"name": "classification", "id": t} for t in wc.TASKS],
        "weighter": {"name": weighter},
        "data": {"name": "synthetic", "num_samples": 16, "num_features": 8,
                 "num_classes": wc.NUM_CLASSES},
    }
    return Trainer(load_config(data=cfg), host)


def params(trainer: Trainer) -> dict[str, int]:
    model = trainer.model
    return {"total": sum(p.numel() for p in model.parameters()),
            "shared": sum(p.numel() for p in model.shared_parameters())}


def time_all(archs: list[str], weighters: list[str], args: argparse.Namespace,
             host: PluginHost) -> dict[str, Any]:
    batches = wc.make_batches(args.steps, args.batch, args.image_size, args.model, args.device)
    sides = [(a, w) for w in weighters for a in [*archs, AA]]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {s: build(s[0], s[1], args, os.path.join(tmp, f"{s[0]}-{s[1]}"), host)
                    for s in sides}
        for s, tr in trainers.items():  # warm-up: allocations, optimizer state
            print(f"warm-up {s}", file=sys.stderr, flush=True)
            wc.run_trainer(tr, batches, args.device)
        seconds: dict[tuple[str, str], list[float]] = {s: [] for s in sides}
        ratios: dict[tuple[str, str], list[float]] = {s: [] for s in sides}
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[: r % len(sides)]
            if r % 2:
                order.reverse()
            this = {s: wc.run_trainer(trainers[s], batches, args.device) for s in order}
            for s in sides:
                seconds[s].append(this[s] / args.steps)
                ratios[s].append(this[s] / this[("hps", s[1])])
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        out: dict[str, Any] = {}
        for (a, w), tr in trainers.items():
            out.setdefault(a, {})[w] = {
                "ratio": summary(ratios[(a, w)]),
                "ms_per_step": {k: v * 1e3 for k, v in summary(seconds[(a, w)]).items()},
                "params": params(tr),
            }
    return out


def memory_one(arch: str, weighter: str, args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process: peak memory of training steps of one pair."""
    host = PluginHost()
    batches = wc.make_batches(2 + args.memory_steps, args.batch, args.image_size, args.model,
                              args.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(arch, weighter, args, tmp, host)
        wc.run_trainer(trainer, batches[:2], args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            wc.run_trainer(trainer, batches[2:], args.device)
            return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20,
                    "method": "torch.cuda.max_memory_allocated"}
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        wc.run_trainer(trainer, batches[2:], args.device)
        return {"peak_mib": wc._status_kib("VmHWM") / 1024, "method": "VmHWM after clear_refs=5"}


def memory_all(archs: list[str], weighters: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in weighters:
        for a in archs:
            print(f"memory {a} {w}", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--memory-one", f"{a}:{w}", "--model", args.model,
                   "--batch", str(args.batch), "--image-size", str(args.image_size),
                   "--memory-steps", str(args.memory_steps), "--device", args.device,
                   "--threads", str(args.threads), "--tasks", str(args.tasks)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                out.setdefault(a, {})[w] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            out.setdefault(a, {})[w] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def markdown(timing: dict[str, Any], memory: dict[str, Any], weighters: list[str],
             args: argparse.Namespace) -> str:
    lines = [
        f"Model `{args.model}`, {args.image_size} px, batch {args.batch}, T={args.tasks},"
        f" device {args.device}, threads {args.threads}; {args.rounds} interleaved rounds of"
        f" {args.steps} steps; every row runs the real `Trainer.train_step` with each"
        " architecture's defaults.",
        "",
        "| architecture | weighter | params / hps | shared params (M) | time / hps: median |"
        " min | max | ms/step | peak memory - hps (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in weighters:
        base = timing["hps"][w]["params"]["total"]
        base_mem = memory.get("hps", {}).get(w, {}).get("peak_mib")
        for a, per in timing.items():
            t = per[w]
            mem = memory.get("hps" if a == AA else a, {}).get(w, {})
            cell = (f"{mem['peak_mib'] - base_mem:+.0f}" if "peak_mib" in mem and
                    base_mem is not None and a != AA else "")
            r = t["ratio"]
            lines.append(
                f"| {a} | {w} | {t['params']['total'] / base:.2f} |"
                f" {t['params']['shared'] / 1e6:.2f} | {r['median']:.2f} | {r['min']:.2f} |"
                f" {r['max']:.2f} | {t['ms_per_step']['median']:.0f} | {cell} |"
            )
    method = next((m.get("method") for per in memory.values() for m in per.values()
                   if "method" in m), "not measured")
    lines += ["", f"Peak memory: {method}, each pair in a fresh process; `hps (A/A)` is a second"
              " hps trainer, the noise of the timing."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet18", help="timm model name")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="steps per pair per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", type=int, default=2, help="number of tasks T (classification)")
    p.add_argument("--archs", default=None, help="comma-separated subset (hps is added)")
    p.add_argument("--weighters", default="equal,pcgrad")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--keep-memory", action="store_true",
                   help="re-time only: keep the memory figures of the existing results file")
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--memory-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    wc.set_tasks(args.tasks)
    torch.set_num_threads(args.threads)
    if args.memory_one:
        arch, weighter = args.memory_one.split(":")
        print(json.dumps(memory_one(arch, weighter, args)))
        return
    host = PluginHost()
    archs = arch_names(host, args.archs.split(",") if args.archs else None)
    weighters = args.weighters.split(",")
    name = f"arch_cost_T{args.tasks}_{args.model}"
    timing = time_all(archs, weighters, args, host)
    if args.keep_memory:
        earlier = json.loads((RESULTS / f"{name}.json").read_text())
        memory = earlier["memory"]
        memory_command = earlier["command"]
    else:
        memory = {} if args.no_memory else memory_all(archs, weighters, args)
        memory_command = None
    md = markdown(timing, memory, weighters, args)
    if memory_command:
        md += f"\nMemory figures from an earlier run: `{memory_command}`.\n"
    payload = {"args": vars(args), "timing": timing, "memory": memory, "torch": torch.__version__,
               "memory_command": memory_command}
    json_path, md_path = write_results(name, payload, md)
    print(md)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
