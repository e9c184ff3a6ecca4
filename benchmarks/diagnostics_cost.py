"""Cost of the task-conflict diagnostics (``trainer.diagnostics``): Trainer step time with them
off, every 10 steps and every step, against a second Trainer with them off (the A/A control).

Same model, batches and method as ``trainer_overhead.py``: four trainers from the same weights,
rounds that rotate which side runs first, the median of per-round time ratios to "off".
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _common import summary, timing_arguments, write_results
from trainer_overhead import build_trainer, make_batches, trainer_loop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    timing_arguments(p)
    args = p.parse_args()
    batches = make_batches(args.steps, args.batch, args.image_size)
    sides = {"off": 0, "off (A/A)": 0, "every 10": 10, "every step": 1}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for i, (name, every) in enumerate(sides.items()):
            trainer = build_trainer(args.backbone, args.image_size, f"{tmp}/{i}")
            trainer.engine.diagnostics_every = every
            trainer_loop(trainer, batches[:2])  # warm-up
            trainers[name] = trainer
        times: dict[str, list[float]] = {k: [] for k in sides}
        order = list(sides)
        for r in range(args.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                times[name].append(trainer_loop(trainers[name], batches))
    res = {
        name: {
            "ms_per_step": summary([t / args.steps * 1000 for t in times[name]]),
            "ratio_to_off": summary([a / b for a, b in zip(times[name], times["off"])]),
        }
        for name in sides
    }
    md = (
        f"Backbone `{args.backbone}`, {args.image_size} px, batch {args.batch}, T=2, `equal`,"
        f" {args.rounds} interleaved rounds of {args.steps} steps, CPU, threads"
        f" {torch.get_num_threads()}.\n\n"
        "| diagnostics | ms/step (median) | ratio to off (median) | min | max |\n"
        "|---|---|---|---|---|\n"
    )
    for name in sides:
        m, ratio = res[name]["ms_per_step"], res[name]["ratio_to_off"]
        md += (
            f"| {name} | {m['median']:.1f} | {ratio['median']:.3f} | {ratio['min']:.3f} |"
            f" {ratio['max']:.3f} |\n"
        )
    write_results(f"diagnostics_cost_{args.backbone}", {"sides": res, "args": vars(args)}, md)
    print(md)


if __name__ == "__main__":
    main()
