"""The ``mtlkit`` command line. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlkit import __version__
from mtlkit.errors import ConfigError

_EPILOG = """examples:
  mtlkit train configs/demo.yaml -o trainer.epochs=3 -o output_dir=runs/x
  mtlkit evaluate configs/demo.yaml -o output_dir=runs/x --checkpoint runs/x/last.pt
  mtlkit predict configs/demo.yaml --checkpoint runs/x/last.pt faces/ --out preds.csv
  mtlkit export configs/demo.yaml --checkpoint runs/x/last.pt --format onnx --out model.onnx
  mtlkit train configs/demo.yaml -o 'weighter={name: equal}'   # -o replaces a whole section
  mtlkit train configs/demo.yaml -o weighter.name=dwa -o weighter.lr=~   # ~ deletes a key
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtlkit",
        description="Plugin-based multi-task learning for PyTorch.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mtlkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="YAML or TOML run config")
        sp.add_argument(
            "-o",
            "--override",
            action="append",
            default=[],
            metavar="PATH=VALUE",
            help="override a config field (YAML value, repeatable, applied in order):"
            " -o trainer.epochs=3; -o 'weighter={name: equal}' replaces a whole section;"
            " -o weighter.lr=~ (or =null) deletes a key, so it takes its default",
        )

    tr = sub.add_parser("train", help="train a run described by a config")
    overrides(tr)
    resume = tr.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue from <output_dir>/last.pt (an error if there is none)",
    )
    resume.add_argument(
        "--resume-if-possible",
        action="store_true",
        help="continue from <output_dir>/last.pt if it exists, else start afresh",
    )
    resume.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output_dir that holds a run: its checkpoints and results are"
        " deleted first (without this, --resume or --overwrite, a non-empty output_dir is an"
        " error)",
    )
    tr.add_argument(
        "--allow-config-change",
        action="store_true",
        help="on resume, accept changed epochs, optimizer, scheduler or weighter options (the"
        " schedule is recomputed and the change recorded); data, tasks and backbone never change",
    )
    tr.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="launch N processes with torchrun (DDP) on this machine",
    )

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on the config's data")
    overrides(ev)
    ev.add_argument("--checkpoint", required=True, help="checkpoint file (loaded weights-only)")
    ev.add_argument("--split", default="test", help="split to evaluate (default: test)")

    pr = sub.add_parser(
        "predict",
        help="run a checkpoint on image files, folders or manifests; one row per image",
        description="Predict every task for each input file (docs/predict-export.md). Writes"
        " CSV or JSON lines (by --out's suffix; JSON lines on stdout without --out); per-image"
        " arrays (embeddings) go to <out stem>.<task>.<name>.npy, row i for row i.",
    )
    overrides(pr)
    pr.add_argument("--checkpoint", required=True, help="checkpoint file (loaded weights-only)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or manifest")
    pr.add_argument("--out", metavar="FILE", help="output file: .csv or .jsonl")
    pr.add_argument(
        "--pairs",
        metavar="FILE",
        help="CSV with columns first,second naming inputs: score each pair (verification) with"
        " the run's recorded threshold; rows go to <out stem>.pairs.<suffix>",
    )
    pr.add_argument(
        "--threshold", type=float, help="decision threshold for --pairs instead of the run's"
    )
    pr.add_argument(
        "--on-bad-image",
        choices=["error", "skip"],
        default="error",
        help="an unreadable input stops the command (error, the default) or gets a row with"
        " its error and no prediction (skip)",
    )
    pr.add_argument(
        "--strict-inputs",
        action="store_true",
        help="refuse an image of another colour mode or size than the model's (by default it is"
        " converted, counted and named in the 'converted' column); --on-bad-image applies",
    )
    pr.add_argument("--batch-size", type=int, metavar="N", help="default: trainer.eval_batch_size")
    pr.add_argument("--force", action="store_true", help="replace existing output files")

    ex = sub.add_parser(
        "export",
        help="export a checkpoint's backbone and heads (ONNX, TorchScript, torch.export)",
        description="Export the model with a sidecar JSON (<out>.json) describing its input"
        " (size, channels, mean, std) and outputs (names, shapes, class names); the exported"
        " file is checked against the PyTorch model before it is written (docs/predict-export.md).",
    )
    overrides(ex)
    ex.add_argument("--checkpoint", required=True, help="checkpoint file (loaded weights-only)")
    ex.add_argument("--format", required=True, help="onnx, torchscript or exported-program")
    ex.add_argument("--out", required=True, metavar="FILE", help="the exported model file")
    ex.add_argument("--force", action="store_true", help="replace existing output files")

    pl = sub.add_parser("plugins", help="list installed plugins and what they register")
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    cf = sub.add_parser("config", help="validate a config or print its JSON schema")
    cfs = cf.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    va = cfs.add_parser("validate", help="check a config, plugin options included")
    overrides(va)
    cfs.add_parser("schema", help="print the run config's JSON schema")

    sw = sub.add_parser(
        "sweep",
        help="run every cell of a sweep spec (base config x axes); resumable, in parallel",
        description="Run the cells of a sweep spec (docs/sweeps.md). Finished cells are"
        " skipped, a cell with a checkpoint resumes, a changed config is a new cell. Exit status:"
        " 0 all done, 1 a cell failed, 75 interrupted (rerun to continue), 2 a bad spec.",
    )
    sw.add_argument("spec", help="YAML or TOML sweep spec")
    sw.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="cells at once: 1 trains in this process; N > 1 runs `mtlkit train` processes,"
        " each with trainer.num_threads = max(1, cpus // N)",
    )
    sw.add_argument(
        "--dry-run", action="store_true", help="list the cells (name, hash, state); run nothing"
    )
    sw.add_argument(
        "--pack",
        action="store_true",
        help="merge the finished cell folders into <output_dir>.jsonl (one line a cell, the"
        " form to commit); run nothing",
    )
    sw.add_argument("--json", action="store_true", help="machine-readable summary on stdout")

    rp = sub.add_parser(
        "report",
        help="tables, paired tests, Delta_m and plots over a sweep's finished cells",
        description="Report on the test metrics of a sweep's cells (docs/sweeps.md): mean, std"
        " and 95%% t interval per method, paired sign and Wilcoxon tests, Delta_m against the"
        " single-task cells, PNG plots (with matplotlib).",
    )
    rp.add_argument(
        "source",
        metavar="RUNS_OR_SPEC",
        help="a sweep spec, a sweep folder, a packed <folder>.jsonl or a folder of runs",
    )
    rp.add_argument("--baseline", metavar="LABEL", help="method to compare every other against")
    rp.add_argument(
        "--metrics",
        nargs="+",
        metavar="TASK/METRIC",
        help="test metrics to report, the first one picks the best static weight (default:"
        " every task's declared metrics)",
    )
    rp.add_argument("--out", metavar="DIR", help="output folder (default: <sweep folder>/report)")
    rp.add_argument("--json", action="store_true", help="print report.json instead of Markdown")
    _data_parser(sub, overrides)
    return p


def _data_parser(sub: Any, overrides: Any) -> None:
    """``mtlkit data shard``: a dataset written as WebDataset shards."""
    da = sub.add_parser("data", help="write a dataset as WebDataset shards")
    das = da.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    sh = das.add_parser(
        "shard",
        help="write every sample of the config's dataset to WebDataset tar shards",
        description="Write the config's dataset (all splits, stored samples) to shard-NNNNNN.tar"
        " files plus index.pt and dataset.json; train on them with data.name=shards, or"
        " data.name=webdataset for face data (re-split by the face protocol).",
    )
    overrides(sh)
    sh.add_argument("--out", required=True, metavar="DIR", help="folder to write the shards to")
    sh.add_argument(
        "--shard-size", type=int, default=1000, metavar="N", help="samples per shard (1000)"
    )
    sh.add_argument("--seed", type=int, default=0, help="seed of the order samples are written in")


def _cmd_plugins(args: argparse.Namespace) -> int:
    from mtlkit.plugins import get_plugin_manager

    host = get_plugin_manager()
    plugins = host.plugins()
    broken = host.broken()
    if args.json:
        print(
            json.dumps(
                {
                    "plugins": [i.as_dict() for i in plugins],
                    "broken": [i.as_dict() for i in broken],
                },
                indent=2,
            )
        )
        return 0
    for info in plugins:
        print(f"{info.name}  ({info.dist} {info.version})")
        for kind, names in info.registers.items():
            if names:
                print(f"    {kind}: {', '.join(names)}")
    for info in broken:
        print(f"BROKEN {info.name}  ({info.dist} {info.version}): {info.error}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from mtlkit.config import RunConfig, load_config

    if args.config_command == "schema":
        print(json.dumps(RunConfig.model_json_schema(), indent=2))
        return 0
    from mtlkit.config import resolve_run
    from mtlkit.plugins import get_plugin_manager

    config = load_config(args.config, args.override)
    resolve_run(config, get_plugin_manager())
    print(f"{args.config}: valid ({len(config.tasks)} tasks, weighter {config.weighter.name!r})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        from mtlkit.config import load_config
        from mtlkit.distributed import launch
        from mtlkit.preempt import EXIT_INTERRUPTED

        refuse_existing_run(Path(load_config(args.config, args.override).output_dir), args)
        code = launch(args.nproc, sys.argv[1:])
        if code == EXIT_INTERRUPTED:
            print(f"mtlkit: resume with: {_resume_command()}", file=sys.stderr)
        return code
    from mtlkit.config import load_config
    from mtlkit.distributed import INTERRUPT_FILE_ENV
    from mtlkit.preempt import TrainingInterrupted
    from mtlkit.trainer import Trainer

    config = load_config(args.config, args.override)
    if int(os.environ.get("RANK", "0")) == 0:  # one rank looks before any rank writes
        refuse_existing_run(Path(config.output_dir), args)
    trainer = Trainer(config)
    if args.overwrite and trainer.is_main:
        clear_run(trainer.run_dir)
    mode = "if-possible" if args.resume_if_possible else bool(args.resume)
    try:
        results = trainer.fit(resume=mode, allow_config_change=args.allow_config_change)
    except TrainingInterrupted as exc:
        if trainer.is_main:
            note = os.environ.get(INTERRUPT_FILE_ENV)
            if note:  # under `--nproc`: the launcher reports it and how to resume
                Path(note).write_text(f"mtlkit: {exc}\n")
            else:
                print(f"mtlkit: {exc}", file=sys.stderr)
                print(f"mtlkit: resume with: {_resume_command()}", file=sys.stderr)
        return exc.exit_code
    if trainer.is_main:
        _print_metrics(results["metrics"])
        print(f"results: {trainer.run_dir / 'results.json'}")
    return 0


RUN_FILES = ("last.pt", "best.pt", "results.json", "steps.jsonl", "steps.csv", "epochs.jsonl",
             "training.png")
"""What a run writes in its output_dir; ``--overwrite`` deletes these before starting afresh."""


def refuse_existing_run(run_dir: Path, args: argparse.Namespace) -> None:
    """Without ``--resume``, ``--resume-if-possible`` or ``--overwrite``, a non-empty output_dir
    is an error: a fresh run there would replace another run's checkpoint, logs and results."""
    if args.resume or args.resume_if_possible or args.overwrite or not run_dir.is_dir():
        return
    held = sorted(p.name for p in run_dir.iterdir())
    if not held:
        return
    shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    raise ConfigError(
        f"output_dir {str(run_dir)!r} is not empty (it holds {shown}): pass --resume to continue"
        " the run there, or --overwrite to start afresh and replace it (or choose another"
        " output_dir)"
    )


def clear_run(run_dir: Path) -> None:
    """Delete the previous run's files (:data:`RUN_FILES`), so none of them (a best.pt, a
    results.json) is taken for the new run's; anything else in the folder is kept."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mtlkit.checkpoint import load_checkpoint
    from mtlkit.config import load_config
    from mtlkit.trainer import Trainer

    config = load_config(args.config, args.override)
    state = load_checkpoint(args.checkpoint)
    trainer = Trainer(config)
    trainer.check_checkpoint(state, purpose="evaluate", split=args.split)
    trainer.load_state_dict(state, model_only=True)
    metrics = trainer.evaluate(args.split)
    print(json.dumps({args.split: metrics}, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from mtlkit import predict
    from mtlkit.config import load_config
    from mtlkit.errors import ConfigError

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {args.batch_size}")
    fmt = predict.output_format(args.out) if args.out else "jsonl"
    if args.out:  # fail before any work on an output that exists
        early = predict.output_paths(args.out, [], bool(args.pairs))
        predict.refuse_existing(list(early.values()), args.force)
    if args.threshold is not None and not args.pairs:
        raise ConfigError("--threshold applies to --pairs, which is not given")
    config = load_config(args.config, args.override)
    run = predict.load_run(config, args.checkpoint, purpose="predict")
    preds = predict.predict_files(
        run, args.inputs, on_bad_image=args.on_bad_image, batch_size=args.batch_size,
        strict_inputs=args.strict_inputs,
    )
    pairs = predict.score_pairs(run, preds, args.pairs, args.threshold) if args.pairs else None
    if not args.out:
        rows = [
            {**r, **{k: a[i] for k, a in preds.arrays.items()}} for i, r in enumerate(preds.rows)
        ]
        print(predict.format_rows(rows, "jsonl"), end="")
        if pairs is not None:
            print(predict.format_rows(pairs, "jsonl"), end="")
        return 0
    paths = predict.output_paths(args.out, list(preds.arrays), pairs is not None)
    predict.refuse_existing(list(paths.values()), args.force)
    files: dict[Path, bytes | str] = {paths["rows"]: predict.format_rows(preds.rows, fmt)}
    files.update({paths[k]: predict.npy_bytes(a) for k, a in preds.arrays.items()})
    if pairs is not None:
        files[paths["pairs"]] = predict.format_rows(pairs, fmt)
    predict.write_outputs(files)
    print(
        f"wrote {', '.join(str(p) for p in files)} ({len(preds.rows)} inputs,"
        f" {len(preds.converted)} converted to the model's {run.layout.describe()})"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mtlkit.config import load_config
    from mtlkit.export import check_target, export_run, sidecar_path
    from mtlkit.predict import load_run, refuse_existing

    target = check_target(args.format, args.out)
    refuse_existing([target, sidecar_path(target)], args.force)
    run = load_run(load_config(args.config, args.override), args.checkpoint, purpose="export")
    content = export_run(run, args.format, args.out, force=args.force)
    worst = max(content["check"]["max_abs_diff"].values(), default=0.0)
    print(
        f"wrote {args.out} and {sidecar_path(args.out)} ({args.format}; outputs match PyTorch"
        f" within {worst:.2g} on {content['check']['samples']} samples)"
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from mtlkit.errors import ConfigError
    from mtlkit.sweep import SweepRunner, dry_run, load_sweep, validate_cells

    if args.jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {args.jobs}")
    sweep = load_sweep(args.spec)
    if args.pack:
        from mtlkit.sweep import pack_sweep

        return pack_sweep(sweep, sys.stdout)
    if args.dry_run:
        from mtlkit.plugins import get_plugin_manager

        validate_cells(sweep, get_plugin_manager())
        return dry_run(sweep, sys.stdout, args.json)
    runner = SweepRunner(sweep, jobs=args.jobs, out=sys.stderr if args.json else sys.stdout)
    code = runner.run()
    if args.json:
        print(json.dumps(runner.summary(), indent=2))
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    from mtlkit.report import write_report

    report, markdown, files = write_report(
        args.source, baseline=args.baseline, metrics=args.metrics, out=args.out
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown, end="")
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _resume_command() -> str:
    """This command line with ``--resume`` (without ``--resume-if-possible`` or
    ``--overwrite``)."""
    import shlex

    argv = [
        a for a in sys.argv[1:] if a not in ("--resume", "--resume-if-possible", "--overwrite")
    ]
    return shlex.join(["mtlkit", *argv, "--resume"])


def _print_metrics(metrics: dict[str, Any]) -> None:
    from mtlkit.notices import format_metric

    """One line per split and task. Counts (ints, or integral floats under a ``num_*`` or
    ``*count`` key) print as integers, other numbers with 4 decimals; non-numbers are skipped."""
    for split, tasks in metrics.items():
        for task, values in tasks.items():
            shown = ", ".join(
                f"{k}={format_metric(k, v)}"
                for k, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            )
            print(f"[{split}] {task}: {shown}")


def _cmd_data(args: argparse.Namespace) -> int:
    from mtlkit.config import load_config
    from mtlkit.errors import ConfigError
    from mtlkit.shards import shard_config

    if args.shard_size < 1:
        raise ConfigError("--shard-size must be at least 1")
    written = shard_config(
        load_config(args.config, args.override), args.out, shard_size=args.shard_size,
        seed=args.seed,
    )
    print(f"wrote {written['count']} samples in {len(written['shards'])} shard(s) to {args.out}")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "plugins": _cmd_plugins,
    "config": _cmd_config,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "data": _cmd_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from mtlkit.errors import MtlkitError

    try:
        return COMMANDS[args.command](args)
    except MtlkitError as exc:
        print(f"mtlkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader left early (`mtlkit sweep --dry-run | head`): stop quietly, as a tool killed
        # by SIGPIPE would, and keep Python from complaining when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
