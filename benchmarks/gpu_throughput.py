"""GPU images/s of the mtlkit Trainer step against a hand-written AMP loop (same model, batches).

Run by ``benchmarks/gpu_smoke.sh`` on a CUDA machine; writes ``results/gpu_throughput.*``.
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
from mtlkit.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="runs/gpu_smoke")
    args = p.parse_args()
    dev = torch.device("cuda")
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = {
            "output_dir": run_dir,
            "trainer": {
                "progress": "off",
                "plot": False,
                "deterministic": False,
                "device": "cuda",
                "precision": "bf16",
            },
            "backbone": {"name": "timm", "model_name": args.model, "in_chans": 3},
            "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
            "data": {"name": "synthetic", "num_samples": 64, "num_features": 8, "num_classes": 7},
        }
        trainer = Trainer(load_config(data=cfg))
        model = copy.deepcopy(trainer.model)
        opt = torch.optim.AdamW(model.parameters(), lr=trainer.config.optimizer.lr)
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(dev)
        ys = {t: torch.randint(0, 7, (args.batch,), generator=gen).to(dev) for t in ("a", "b")}
        batch = {"input": x, "targets": ys, "meta": {}}

        def hand() -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    f = model.backbone(x)
                    loss = sum(F.cross_entropy(model.heads[t](f).float(), ys[t]) for t in ys)
                loss.backward()
                opt.step()
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        def ours() -> float:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(batch)  # type: ignore[arg-type]
            torch.cuda.synchronize()
            return time.perf_counter() - t0

        hand(), ours()
        t_h, t_o = [], []
        for r in range(args.rounds):
            if r % 2:
                t_h.append(hand())
                t_o.append(ours())
            else:
                t_o.append(ours())
                t_h.append(hand())
    ips_h = [args.steps * args.batch / t for t in t_h]
    ips_o = [args.steps * args.batch / t for t in t_o]
    res = {
        "device": torch.cuda.get_device_name(0),
        "hand_images_per_s": summary(ips_h),
        "mtlkit_images_per_s": summary(ips_o),
        "ratio": summary([o / h for o, h in zip(t_o, t_h)]),
        "args": vars(args),
    }
    md = (
        f"{res['device']}, {args.model} at {args.image_size} px, batch {args.batch}, bf16, T=2\n\n"
        f"| | median images/s | min | max |\n|---|---|---|---|\n"
        f"| hand-written loop | {res['hand_images_per_s']['median']:.0f} |"
        f" {res['hand_images_per_s']['min']:.0f} | {res['hand_images_per_s']['max']:.0f} |\n"
        f"| mtlkit Trainer | {res['mtlkit_images_per_s']['median']:.0f} |"
        f" {res['mtlkit_images_per_s']['min']:.0f} | {res['mtlkit_images_per_s']['max']:.0f} |\n"
    )
    write_results("gpu_throughput", res, md)
    print(md)


if __name__ == "__main__":
    main()
