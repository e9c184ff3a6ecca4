"""Trainer step time against a hand-written PyTorch loop on the same model and batches.

Both sides start from the same weights, see the same batches, use AdamW and equal weights. Rounds
alternate which side runs first; the figure is the median of per-round time ratios.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import summary, write_results

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", default="resnet18", help="timm model name, or 'mlp'")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="steps per side per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--profile",
        action="store_true",
        help="also report the time spent in mtlkit's own Python code per step (cProfile)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(args.backbone, args.image_size, run_dir)
        model = copy.deepcopy(trainer.model)
        lr = trainer.config.optimizer.lr
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        batches = make_batches(args.steps, args.batch, args.image_size)
        hand_loop(model, opt, batches[:2])  # warm-up both
        trainer_loop(trainer, batches[:2])
        ratios, t_hand, t_ours = [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                a = trainer_loop(trainer, batches)
                b = hand_loop(model, opt, batches)
            else:
                b = hand_loop(model, opt, batches)
                a = trainer_loop(trainer, batches)
            ratios.append(a / b)
            t_ours.append(a / args.steps * 1000)
            t_hand.append(b / args.steps * 1000)
    own_ms = None
    if args.profile:
        own_ms = profile_own_code(args)
    res = {
        "ratio": summary(ratios),
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
