"""The functional path (``mtlkit.WeightedStep``) against a hand-written loop on the same model.

The hand loop sums the task losses and calls ``backward``; the functional side computes the same
losses and calls ``WeightedStep.backward`` with ``equal`` weighting, which must fill the same
gradients. Same method as ``trainer_overhead.py``: same weights and batches, AdamW, rounds that
rotate which side runs first, the median of per-round time ratios, and an A/A control (a second
copy of the hand loop) whose ratio shows this machine's noise.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import summary, timing_arguments, write_results
from trainer_overhead import build_trainer, hand_copy, make_batches

import mtlkit
from mtlkit.data import Batch


def functional_loop(
    model: torch.nn.Module, opt: torch.optim.Optimizer, step: mtlkit.WeightedStep,
    batches: list[Batch],
) -> float:
    t0 = time.perf_counter()
    for b in batches:
        model.train()
        opt.zero_grad(set_to_none=True)
        features = model.backbone(b["input"])
        losses = [F.cross_entropy(model.heads[t](features), b["targets"][t]) for t in ("a", "b")]
        step.backward(losses, features=features)
        opt.step()
        step.after_step()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    timing_arguments(p)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from trainer_overhead import hand_loop

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(args.backbone, args.image_size, run_dir)
        batches = make_batches(args.steps, args.batch, args.image_size)
        model, opt = hand_copy(trainer, batches)
        twin, twin_opt = hand_copy(trainer, batches)
        ours = copy.deepcopy(trainer.model)
        ours_opt = torch.optim.AdamW(ours.parameters(), lr=trainer.config.optimizer.lr,
                                     weight_decay=0.0)
        step = mtlkit.WeightedStep(mtlkit.create_weighter("equal", ["a", "b"]),
                                   shared=ours.shared_parameters())
        functional_loop(ours, ours_opt, step, batches[:2])  # warm-up
        sides = {
            "ours": lambda: functional_loop(ours, ours_opt, step, batches),
            "hand": lambda: hand_loop(model, opt, batches),
            "twin": lambda: hand_loop(twin, twin_opt, batches),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        order = list(sides)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                times[name].append(sides[name]())
    ratios = [a / b for a, b in zip(times["ours"], times["hand"])]
    control = [a / b for a, b in zip(times["twin"], times["hand"])]
    res = {
        "ratio": summary(ratios),
        "control_ratio": summary(control),
        "functional_ms_per_step": summary([t / args.steps * 1000 for t in times["ours"]]),
        "hand_ms_per_step": summary([t / args.steps * 1000 for t in times["hand"]]),
        "args": vars(args),
    }
    f, h, r, c = (res[k] for k in ("functional_ms_per_step", "hand_ms_per_step", "ratio",
                                   "control_ratio"))
    md = (
        f"Backbone `{args.backbone}`, {args.image_size} px, batch {args.batch}, T=2, `equal`"
        f" through `mtlkit.WeightedStep`, {args.rounds} interleaved rounds of {args.steps} steps,"
        f" CPU, threads {torch.get_num_threads()}. Goal: <= 1.02x the hand-written loop.\n\n"
        "| | median | min | max |\n|---|---|---|---|\n"
        f"| hand-written loop, ms/step | {h['median']:.1f} | {h['min']:.1f} | {h['max']:.1f} |\n"
        f"| functional path, ms/step | {f['median']:.1f} | {f['min']:.1f} | {f['max']:.1f} |\n"
        f"| ratio (functional / hand) | {r['median']:.3f} | {r['min']:.3f} | {r['max']:.3f} |\n"
        f"| A/A control: identical hand loop / hand loop | {c['median']:.3f} | {c['min']:.3f} |"
        f" {c['max']:.3f} |\n"
    )
    write_results(f"functional_overhead_{args.backbone}", res, md)
    print(md)


if __name__ == "__main__":
    main()
