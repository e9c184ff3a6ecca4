"""Data throughput: images per second the training loader delivers, in memory and streamed from
disk with 0, 1 and 2 worker processes; peak memory and epoch time as the data grows.

The data is drawn faces (``mtlkit_face.data.files``, the ``synthetic_faces`` renderer) at 112 px,
grayscale PNG, with a manifest, cached outside the repository (``--cache``, default
``~/.cache/mtlkit/data_throughput``) and written once. The renderer draws a pool of
``--pool`` distinct images; a set of N images is the pool repeated under new person names
(distinct files, ``C<k>_ID...``), which is all a throughput measurement needs and keeps the
200k-image set within minutes to write on a small machine.

Each measurement runs in its own process: the face manifest dataset is set up (subject-kfold
fold 0, 10 folds, no validation split) and one epoch of its training split is read through
``mtlkit.loading`` exactly as the trainer reads it (shuffled order, per-image augmentation with
the default flip and shift, normalisation), without a model. Reported: setup seconds, epoch
seconds, images per second, and peak RSS of the main process and of the largest worker.

    python benchmarks/data_throughput.py                    # 20k and 200k, writes results/
    python benchmarks/data_throughput.py --sizes 2000 --pool 2000 --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_results

SIZE = 112
BATCH = 64


def _pool(cache: Path, pool: int) -> Path:
    """The distinct drawn images (written once): ``<cache>/pool-<n>/faces.csv``."""
    from mtlkit_face.data.files import MANIFEST, write_synthetic_faces

    folder = cache / f"pool-{pool}"
    if (folder / MANIFEST).is_file():
        return folder / MANIFEST
    expressions, frames = 7, 3
    identities = max(2, -(-pool // (expressions * frames)))
    t0 = time.perf_counter()
    manifest = write_synthetic_faces(
        folder, size=SIZE, chans=1, num_identities=identities, frames_per_sequence=frames
    )
    print(f"drew {identities * expressions * frames} faces in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return manifest


def dataset(cache: Path, size: int, pool: int) -> Path:
    """A set of ``size`` images: the pool's files copied under ``C<k>_`` person names."""
    folder = cache / f"set-{size}-pool-{pool}"
    manifest = folder / "faces.csv"
    if manifest.is_file():
        return manifest
    source = _pool(cache, pool)
    with open(source, newline="") as f:
        rows = list(csv.reader(f))[1:]
    t0 = time.perf_counter()
    out: list[list[str]] = []
    for n in range(size):
        copy, (path, subject, expression, sequence) = divmod(n, len(rows))[0], rows[n % len(rows)]
        name = f"C{copy}_{subject}"
        rel = f"img/{name}/{Path(path).name}"
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / path, target)
        out.append([rel, name, expression, sequence])
    tmp = folder / "faces.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "subject", "expression", "sequence"])
        writer.writerows(out)
    os.replace(tmp, manifest)
    print(f"wrote {size} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return manifest


def measure(manifest: str, storage: str, workers: int, limit: int = 0) -> dict[str, Any]:
    """One epoch of the training split through the trainer's loader (run in a child process);
    ``limit``: only its first ``limit`` images (whole batches)."""
    import torch
    from mtlkit_face.data.manifest import ManifestData

    from mtlkit.config import LoaderConfig
    from mtlkit.loading import BatchLoader, EpochPlan, resolve_loader

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = ManifestData(ManifestData.Options(
        manifest=manifest, storage=storage, image_size=SIZE, val_fraction=0.0, num_folds=10,
    ))
    splits = data.setup(["face_identity", "expression"], {"in_chans": 1})
    setup = time.perf_counter() - t0
    train = splits.train
    settings = resolve_loader(LoaderConfig(num_workers=workers), train, torch.device("cpu"))
    plan = EpochPlan(train, BATCH, seed=0)
    loader = BatchLoader(train, settings, seed=0)
    t0 = time.perf_counter()
    seen = 0
    keys = plan.keys(0, limit=-(-limit // BATCH) if limit else None)
    for loaded in loader(keys):
        seen += len(loaded.batch["input"])
    epoch = time.perf_counter() - t0
    loader.close()
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "storage": storage,
        "workers": settings.num_workers,
        "images": len(train),
        "read": seen,
        "epoch_fraction": round(len(keys) / plan.num_batches, 4),
        "setup_s": round(setup, 2),
        "epoch_s": round(epoch, 2),
        "images_per_s": round(seen / epoch, 1),
        "rss_main_mb": round(main, 1),
        "rss_worker_mb": round(workers_peak, 1) if settings.num_workers else None,
    }


def train_check(manifest: Path, out: Path, steps: int) -> dict[str, Any]:
    """Train on the set streamed with 2 workers for ``steps`` steps, uninterrupted and stopped
    halfway then resumed; True when the final weights are bit-identical."""
    import torch

    from mtlkit import load_config
    from mtlkit.trainer import Trainer

    def config(name: str, max_steps: int) -> Any:
        return load_config(data=_check_config(manifest, out / name, steps, max_steps, workers=2))

    def fit(trainer: Trainer, **kw: Any) -> float:
        t0 = time.perf_counter()
        trainer.finish = lambda seconds: {}  # type: ignore[method-assign]  # no test pass
        trainer.fit(**kw)
        return time.perf_counter() - t0

    full = Trainer(config("full", steps))
    seconds = fit(full)
    part = Trainer(config("part", steps // 2))
    fit(part)
    resumed = Trainer(config("part", steps))
    fit(resumed, resume=True, allow_config_change=True)
    same = all(torch.equal(a, b) for a, b in zip(full.model.parameters(),
                                                  resumed.model.parameters()))
    return {"steps": steps, "train_images": len(full.data.train), "seconds": round(seconds, 1),
            "resumed_bit_identical": same}


def _check_config(
    manifest: Path, out: Path, steps: int, max_steps: int, workers: int
) -> dict[str, Any]:
    """The resume checks' run: ``test_resnet`` on the streamed set, checkpoint halfway, no
    validation pass."""
    return {
        "output_dir": str(out), "seed": 0,
        "trainer": {"epochs": 1, "batch_size": BATCH, "max_steps": max_steps,
                    "progress": "off", "plot": False, "eval_every": 0,
                    "checkpoint_every": max(1, steps // 2), "loader": {"num_workers": workers}},
        "backbone": {"name": "timm", "model_name": "test_resnet", "in_chans": 1},
        "tasks": [{"name": "face_identity"}, {"name": "expression"}],
        "data": {"name": "manifest", "manifest": str(manifest), "storage": "stream",
                 "image_size": SIZE, "val_fraction": 0.0, "num_folds": 10},
    }


def ddp_check(manifest: Path, out: Path, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps under torchrun (2 ranks, gloo, one worker per rank) on the set
    streamed from disk, uninterrupted and stopped halfway then resumed; True when rank 0's final
    weights are bit-identical. The final test pass is skipped (only the weights are compared)."""
    import torch

    from mtlkit.checkpoint import load_checkpoint

    def run(name: str, max_steps: int, resume: bool) -> float:
        cfg = out / f"{name}-{max_steps}.json"
        cfg.write_text(json.dumps(_check_config(manifest, out / name, steps, max_steps, 1)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", __file__, "--ddp-child", str(cfg), str(int(resume))]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"ddp run {name} failed:\n{proc.stderr[-3000:]}")
        return time.perf_counter() - t0

    seconds = run("full", steps, False)
    run("part", steps // 2, False)
    run("part", steps, True)
    full = load_checkpoint(out / "full" / "last.pt")["model"]
    part = load_checkpoint(out / "part" / "last.pt")["model"]
    same = all(torch.equal(full[k], part[k]) for k in full)
    return {"steps": steps, "ranks": 2, "workers_per_rank": 1, "seconds": round(seconds, 1),
            "resumed_bit_identical": same}


def _ddp_child(config: str, resume: bool) -> None:
    from mtlkit import distributed, load_config
    from mtlkit.trainer import Trainer

    trainer = Trainer(load_config(data=json.loads(Path(config).read_text())))
    trainer.finish = lambda seconds: {}  # type: ignore[method-assign]  # no test pass
    trainer.fit(resume=resume, allow_config_change=resume)
    distributed.shutdown()


def _child(manifest: Path, storage: str, workers: int, limit: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(manifest), storage, str(workers), str(limit)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _markdown(rows: list[dict[str, Any]], pool: int) -> str:
    lines = [
        f"Drawn faces, 112 px grayscale PNG (a pool of {pool} distinct images, repeated under new"
        " names), subject-kfold fold 0 of 10 (the training split is ~90% of N), batch 64,"
        " default augmentation (flip, shift), one epoch read through `mtlkit.loading` without a"
        " model, 1 torch thread per process.",
        "",
        "| N | storage | workers | train images | images read | setup s | read s |"
        " images/s | epoch s (all train images) | peak RSS main (MB) | peak RSS per worker (MB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        worker = "" if r["rss_worker_mb"] is None else f"{r['rss_worker_mb']:.0f}"
        full = r["images"] / r["images_per_s"]
        lines.append(
            f"| {r['n']} | {r['storage']} | {r['workers']} | {r['images']} | {r['read']} |"
            f" {r['setup_s']:.1f} | {r['epoch_s']:.1f} | {r['images_per_s']:.0f} |"
            f" {full:.0f}{'' if r['read'] == r['images'] else ' (from the rate)'} |"
            f" {r['rss_main_mb']:.0f} | {worker} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "mtlkit" / "data_throughput"))
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    p.add_argument("--pool", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--memory-up-to", type=int, default=20_000,
                   help="largest N also measured in memory (decoded: N x 12.5 KB)")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--train-check", type=int, default=0, metavar="STEPS",
                   help="also train STEPS steps on the largest set (2 workers), and again stopped"
                   " halfway and resumed: are the weights bit-identical?")
    p.add_argument("--no-write", action="store_true", help="print, do not write results/")
    p.add_argument("--read-at-most", type=int, default=0, metavar="IMAGES",
                   help="read only the first IMAGES of each epoch (0: all); per-image cost is"
                   " then measured on a sample of the shuffled epoch")
    p.add_argument("--ddp-check", type=int, default=0, metavar="STEPS",
                   help="only: train STEPS steps on the largest set under torchrun (2 ranks,"
                   " gloo, 1 worker each), and again stopped halfway and resumed; writes"
                   " results/data_throughput_ddp")
    p.add_argument("--ddp-child", nargs=2, metavar=("CONFIG", "RESUME"), help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=4, metavar=("MANIFEST", "STORAGE", "WORKERS", "LIMIT"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        manifest, storage, workers, limit = args.child
        print(json.dumps(measure(manifest, storage, int(workers), int(limit))))
        return
    if args.ddp_child:
        _ddp_child(args.ddp_child[0], args.ddp_child[1] == "1")
        return
    cache = Path(args.cache).expanduser()
    manifests = {n: dataset(cache, n, args.pool) for n in args.sizes}
    if args.generate_only:
        return
    if args.ddp_check:
        import tempfile

        largest = max(manifests)
        with tempfile.TemporaryDirectory() as tmp:
            ddp = {"n": largest, **ddp_check(manifests[largest], Path(tmp), args.ddp_check)}
        md = (
            f"Training on the {largest}-image set streamed from disk under torchrun (2 ranks,"
            f" gloo, 1 loader worker per rank, `test_resnet`, batch {BATCH} per rank):"
            f" {ddp['steps']} steps in {ddp['seconds']} s (process start and data setup"
            f" included); stopped after {ddp['steps'] // 2} and resumed, rank 0's final weights"
            f" are {'bit-identical' if ddp['resumed_bit_identical'] else 'NOT identical'} to the"
            " uninterrupted run's.\n"
        )
        print(md)
        if not args.no_write:
            write_results("data_throughput_ddp", ddp, md)
        return
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for n, manifest in manifests.items():
        runs = [("memory", 0)] if n <= args.memory_up_to else []
        runs += [("stream", w) for w in args.workers]
        for storage, workers in runs:
            row = {"n": n, **_child(manifest, storage, workers, args.read_at_most)}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    total = time.perf_counter() - t0
    markdown = _markdown(rows, args.pool)
    check = None
    if args.train_check:
        import tempfile

        largest = max(manifests)
        with tempfile.TemporaryDirectory() as tmp:
            check = {"n": largest, **train_check(manifests[largest], Path(tmp), args.train_check)}
        print(json.dumps(check), file=sys.stderr)
        markdown += (
            f"\nTraining on the {largest}-image set (streamed, 2 workers, `test_resnet`, batch"
            f" {BATCH}): {check['steps']} steps in {check['seconds']} s; stopped after"
            f" {check['steps'] // 2} and resumed, the final weights are"
            f" {'bit-identical' if check['resumed_bit_identical'] else 'NOT identical'} to the"
            " uninterrupted run's.\n"
        )
    print(markdown)
    if not args.no_write:
        write_results("data_throughput", {"pool": args.pool, "rows": rows, "train_check": check,
                                          "seconds": round(total, 1)}, markdown)


if __name__ == "__main__":
    main()
