"""Trainer step time against a hand-written PyTorch loop on the same model and batches.

Both sides start from the same weights, see the same batches, use AdamW and equal weights. Rounds
rotate which side runs first; the figure is the median of per-round time ratios. A third side, a
second copy of the hand-written loop, is an A/A control: its ratio to the first shows the noise.
``--ops`` instead lists the torch ops whose time differs between trainer and hand loop.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F
from _common import summary, timing_arguments, write_results

from mtlkit.config import load_config
from mtlkit.data import Batch
from mtlkit.trainer import Trainer


def build_trainer(backbone: str, image_size: int, run_dir: str) -> Trainer:
    if backbone == "mlp":
        bb = {"name": "mlp", "in_features": 3 * image_size * image_size, "hidden": [512, 256]}
    else:
        bb = {"name": "timm", "model_name": backbone, "in_chans": 3}
    cfg = {
        "output_dir": run_dir,
        "trainer": {"progress": "off", "plot": False, "deterministic": False},
        "backbone": bb,
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
        "data": {"name": "synthetic", "num_samples": 64, "num_features": 8, "num_classes": 7},
    }
    return Trainer(load_config(data=cfg))


def make_batches(n: int, batch: int, image_size: int, seed: int = 0) -> list[Batch]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Batch(
            input=torch.randn(batch, 3, image_size, image_size, generator=gen),
            targets={t: torch.randint(0, 7, (batch,), generator=gen) for t in ("a", "b")},
            meta={},
        )
        for _ in range(n)
    ]


def hand_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[Batch]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        model.train()
        opt.zero_grad(set_to_none=True)
        features = model.backbone(b["input"])
        loss = sum(F.cross_entropy(model.heads[t](features), b["targets"][t]) for t in ("a", "b"))
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def trainer_loop(trainer: Trainer, batches: list[Batch]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        result = trainer.train_step(b)
        assert result is not None
        trainer.log.log_step(trainer.state.step, 0, 0.0, result.losses, result.weights)
        trainer.state.step += 1
    trainer.log.flush()
    return time.perf_counter() - t0


def profile_own_code(args: argparse.Namespace) -> float:
    """Milliseconds per step spent in mtlkit's own Python frames (not in the torch ops it calls)."""
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(args.backbone, args.image_size, run_dir)
        batches = make_batches(args.steps, args.batch, args.image_size)
        trainer_loop(trainer, batches[:2])
        prof = cProfile.Profile()
        prof.enable()
        trainer_loop(trainer, batches)
        prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    own = sum(v[2] for k, v in stats.items() if "/mtlkit/" in k[0] or "/plugins/" in k[0])
    return own / args.steps * 1000


def hand_copy(
    trainer: Trainer, batches: list[Batch]
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A copy of the trainer's model with its own AdamW, warmed up by the hand-written loop."""
    model = copy.deepcopy(trainer.model)
    opt = torch.optim.AdamW(model.parameters(), lr=trainer.config.optimizer.lr, weight_decay=0.0)
    hand_loop(model, opt, batches[:2])
    return model, opt


def warm_pair(
    args: argparse.Namespace, run_dir: str
) -> tuple[Trainer, torch.nn.Module, torch.optim.Optimizer, list[Batch]]:
    """The trainer, a copy of its model with its own AdamW, the batches; both sides warmed up."""
    trainer = build_trainer(args.backbone, args.image_size, run_dir)
    batches = make_batches(args.steps, args.batch, args.image_size)
    model, opt = hand_copy(trainer, batches)
    trainer_loop(trainer, batches[:2])
    return trainer, model, opt, batches


def op_differences(args: argparse.Namespace, passes: int = 3) -> list[dict[str, Any]]:
    """Per-step self CPU time of each torch op, trainer minus hand loop (torch.profiler).

    Names the ops the trainer runs that the hand loop does not (or runs longer), to tell a real
    extra cost from round-to-round noise. The sides alternate over ``passes`` profiled passes and
    each op's figure is its median over the passes (the first profiled pass runs slow).
    """
    from torch.profiler import ProfilerActivity, profile

    def per_op(run: Any) -> dict[str, tuple[float, int]]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        return {
            e.key: (e.self_cpu_time_total / 1000 / args.steps, e.count // args.steps)
            for e in prof.key_averages()
        }

    seen: dict[str, list[dict[str, tuple[float, int]]]] = {"ours": [], "hand": []}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer, model, opt, batches = warm_pair(args, run_dir)
        for i in range(passes):
            sides = [("ours", lambda: trainer_loop(trainer, batches)),
                     ("hand", lambda: hand_loop(model, opt, batches))]
            for side, run in sides if i % 2 == 0 else sides[::-1]:
                seen[side].append(per_op(run))

    def median(side: str, key: str) -> tuple[float, int]:
        vals = sorted(p.get(key, (0.0, 0)) for p in seen[side])
        return vals[len(vals) // 2]

    keys = {k for side in seen.values() for p in side for k in p}
    rows = []
    for key in keys:
        (a, na), (b, nb) = median("ours", key), median("hand", key)
        rows.append({"op": key, "trainer_ms": a, "hand_ms": b, "diff_ms": a - b,
                     "trainer_calls": na, "hand_calls": nb})
    rows.sort(key=lambda r: -abs(r["diff_ms"]))
    return rows


def report_ops(args: argparse.Namespace) -> None:
    """Write and print the op-by-op comparison (``--ops``)."""
    rows = op_differences(args)
    ours, hand = sum(r["trainer_ms"] for r in rows), sum(r["hand_ms"] for r in rows)
    extra = [r["op"] for r in rows if r["trainer_calls"] > r["hand_calls"]]
    md = (
        f"Backbone `{args.backbone}`, {args.image_size} px, batch {args.batch}, T=2, equal"
        f" weights, torch.profiler self CPU time per step, median of 3 alternating passes of"
        f" {args.steps} steps per side.\n\n"
        "| op | trainer ms/step | hand ms/step | diff | calls/step (trainer, hand) |\n"
        "|---|---|---|---|---|\n"
        + "".join(
            f"| {r['op']} | {r['trainer_ms']:.2f} | {r['hand_ms']:.2f} | {r['diff_ms']:+.2f} |"
            f" {r['trainer_calls']}, {r['hand_calls']} |\n"
            for r in rows[:12]
        )
        + f"\nAll ops, self CPU ms/step: trainer {ours:.1f}, hand {hand:.1f}.\n"
        + "Ops the trainer calls more often per step (the masked loss, the finite check, the"
        + " loss stacking): " + ", ".join(f"`{e}`" for e in extra[:20]) + ".\n"
    )
    write_results(f"trainer_ops_{args.backbone}", {"rows": rows, "args": vars(args)}, md)
    print(md)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    timing_arguments(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--profile",
        action="store_true",
        help="also report the time spent in mtlkit's own Python code per step (cProfile)",
    )
    p.add_argument(
        "--ops",
        action="store_true",
        help="only print the torch ops whose per-step self CPU time differs most (torch.profiler)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ops:
        report_ops(args)
        return
    with tempfile.TemporaryDirectory() as run_dir:
        trainer, model, opt, batches = warm_pair(args, run_dir)
        # A/A control: a second, identical hand-written loop on its own copy of the model. Its
        # ratio to the first shows how far two identical loops drift apart on this machine.
        twin, twin_opt = hand_copy(trainer, batches)
        sides = {
            "ours": lambda: trainer_loop(trainer, batches),
            "hand": lambda: hand_loop(model, opt, batches),
            "twin": lambda: hand_loop(twin, twin_opt, batches),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        order = list(sides)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:  # every side goes first in turn
                times[name].append(sides[name]())
        ratios = [a / b for a, b in zip(times["ours"], times["hand"])]
        control = [a / b for a, b in zip(times["twin"], times["hand"])]
        t_ours = [t / args.steps * 1000 for t in times["ours"]]
        t_hand = [t / args.steps * 1000 for t in times["hand"]]
    own_ms = None
    if args.profile:
        own_ms = profile_own_code(args)
    res = {
        "ratio": summary(ratios),
        "control_ratio": summary(control),
        "trainer_ms_per_step": summary(t_ours),
        "hand_ms_per_step": summary(t_hand),
        "args": vars(args),
        "mtlkit_own_python_ms_per_step": own_ms,
    }
    md = (
        f"Backbone `{args.backbone}`, {args.image_size} px, batch {args.batch}, T=2, equal weights,"
        f" {args.rounds} interleaved rounds of {args.steps} steps, CPU, threads"
        f" {torch.get_num_threads()}.\n\n"
        "| | median | min | max |\n|---|---|---|---|\n"
        f"| hand-written loop, ms/step | {res['hand_ms_per_step']['median']:.1f} |"
        f" {res['hand_ms_per_step']['min']:.1f} | {res['hand_ms_per_step']['max']:.1f} |\n"
        f"| mtlkit Trainer, ms/step | {res['trainer_ms_per_step']['median']:.1f} |"
        f" {res['trainer_ms_per_step']['min']:.1f} | {res['trainer_ms_per_step']['max']:.1f} |\n"
        f"| ratio (trainer / hand) | {res['ratio']['median']:.3f} | {res['ratio']['min']:.3f} |"
        f" {res['ratio']['max']:.3f} |\n"
        f"| A/A control: identical hand loop / hand loop | {res['control_ratio']['median']:.3f} |"
        f" {res['control_ratio']['min']:.3f} | {res['control_ratio']['max']:.3f} |\n"
        "\nThe A/A control runs the same hand-written loop twice (two copies of the model): its"
        " spread is this machine's noise floor for the ratio above.\n"
    )
    if own_ms is not None:
        md += (
            f"\nTime spent in mtlkit's own Python code (cProfile, excluding the torch ops it"
            f" calls): {own_ms:.2f} ms per step.\n"
        )
    write_results(f"trainer_overhead_{args.backbone}", res, md)
    print(md)


if __name__ == "__main__":
    main()
