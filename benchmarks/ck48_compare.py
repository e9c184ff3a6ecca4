"""CK+48, subject-kfold: expression and verification accuracy of each weighter on the same split.

Every run uses configs/ck48.yaml with only the weighter changed (same seed, data, backbone and
schedule). The last epoch is reported; nothing is selected on the test fold.

A weighter is a registered name (``dynamic``) or ``label={yaml mapping}`` for a variant, e.g.
``'dynamic-bounded={name: dynamic, normalize_logits: true, clamp: [0.01, 0.99]}'``.
The result files are rewritten after every run, and a rerun of the same command skips the runs
already in them (same fold, label, weighter, epochs, model, seed and overrides): a killed sweep
continues where it stopped. Each row keeps the per-epoch mean task weights and losses.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from _common import PLOTS, RESULTS, write_results

from mtlkit.config import load_config
from mtlkit.runlog import read_steps
from mtlkit.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


METRICS = (
    "expression_accuracy",
    "expression_macro_f1",
    "verification_accuracy",
    "verification_auc",
    "val_expression_accuracy",
    "val_verification_accuracy",
)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render(rows: list[dict[str, Any]], args: dict[str, Any]) -> str:
    """The markdown table, with a mean row per weighter when there are several folds."""
    overrides = args.get("override") or []
    md = (
        f"CK+48, subject-kfold (10 folds over sorted subjects), folds {args['folds']}, timm"
        f" `{args['model']}` from scratch at 48 px grayscale, {args['epochs']} epochs, seed"
        f" {args['seed']}, last epoch reported (no selection on the test fold)."
        + (f" Overrides: {', '.join(f'`{o}`' for o in overrides)}." if overrides else "")
        + "\n\n"
        "| fold | weighter | expression acc | expression macro-F1 | verification acc |"
        " verification AUC | val expr acc | val verif acc | minutes |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        md += (
            f"| {r['fold']} | `{r['weighter']}` | "
            + " | ".join(_f(r[k]) for k in METRICS)
            + f" | {r['minutes']} |\n"
        )
    if len(args["folds"]) > 1:
        for weighter in args["weighters"]:
            mine = [r for r in rows if r["weighter"] == weighter]
            means = []
            for k in METRICS:
                vals = [r[k] for r in mine if r[k] is not None]
                means.append(_f(sum(vals) / len(vals)) if vals else "n/a")
            md += f"| **mean** | `{weighter}` | " + " | ".join(means) + " | |\n"
    return md + render_trajectories(rows)


def render_trajectories(rows: list[dict[str, Any]]) -> str:
    """The identity weight (epoch mean) of every run on the first fold, one column per run."""
    runs = [r for r in rows if r.get("trajectory")]
    if not runs:
        return ""
    fold = min(r["fold"] for r in runs)
    runs = [r for r in runs if r["fold"] == fold]
    epochs = max(len(r["trajectory"]) for r in runs)
    md = (
        f"\nIdentity weight per epoch (mean over the epoch's steps), fold {fold} (for weights on"
        " the simplex, expression gets 1 minus it):\n\n| epoch | "
        + " | ".join(f"`{r['weighter']}`" for r in runs)
        + " |\n|---|" + "---|" * len(runs) + "\n"
    )
    for e in range(epochs):
        cells = []
        for r in runs:
            t = r["trajectory"]
            v = t[e].get("weight/face_identity") if e < len(t) else None
            cells.append(_f(v))
        md += f"| {e} | " + " | ".join(cells) + " |\n"
    return md


def rerender(name: str) -> None:
    """Rewrite ``<name>.md`` from ``<name>.json`` (no training), keeping the run's command."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    meta = {k: data[k] for k in ("command", "machine", "date")}
    rows, args = data["rows"], data["args"]
    write_results(name, {"rows": rows, "args": args}, render(rows, args), meta)
    plot_weights(name, rows)


def parse_weighter(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``label={yaml mapping}`` -> (label, weighter section)."""
    label, sep, body = spec.partition("=")
    if not sep:
        return spec, {"name": spec}
    section = yaml.safe_load(body)
    if not isinstance(section, dict) or "name" not in section:
        raise SystemExit(f"--weighters {spec!r}: expected label={{name: ..., option: ...}}")
    return label, section


def trajectory(run_dir: Path, tasks: list[str]) -> list[dict[str, Any]]:
    """Per-epoch means of the logged task weights and losses (from ``steps.jsonl``)."""
    by_epoch: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in read_steps(run_dir / "steps.jsonl"):
        by_epoch[int(row["epoch"])].append(row)
    out = []
    for epoch in sorted(by_epoch):
        rows = by_epoch[epoch]
        entry: dict[str, Any] = {"epoch": epoch}
        for kind in ("weight", "loss"):
            for t in tasks:
                vals = [r[f"{kind}/{t}"] for r in rows if r.get(f"{kind}/{t}") is not None]
                entry[f"{kind}/{t}"] = round(sum(vals) / len(vals), 4) if vals else None
        out.append(entry)
    return out


def run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["fold"], row["weighter"], json.dumps(row.get("weighter_config"), sort_keys=True))


def load_done(name: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of an earlier, interrupted run of the same settings (empty if none or different)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    same = ("epochs", "model", "seed", "override")
    if any(data.get("args", {}).get(k) != args.get(k) for k in same):
        print(f"{path.name}: other settings; starting afresh", flush=True)
        return []
    return list(data.get("rows", []))


def plot_weights(name: str, rows: list[dict[str, Any]]) -> Path | None:
    """PNG of the identity weight per epoch, one line per run (label and fold)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = sorted({r["weighter"] for r in rows if r.get("trajectory")})
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.2), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for r in rows:
            if r["weighter"] != label or not r.get("trajectory"):
                continue
            ep = [t["epoch"] for t in r["trajectory"]]
            ax.plot(ep, [t["weight/face_identity"] for t in r["trajectory"]],
                    label=f"fold {r['fold']}")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.03, 1.05)  # equal weights sit at 1
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("identity weight (epoch mean)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    out = PLOTS / f"{name}_weights.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--root",
        default=os.environ.get("MTLKIT_CK48", str(REPO.parent / "shared" / "datasets" / "ck48")),
    )
    p.add_argument("--weighters", nargs="+", default=["equal", "dynamic"])
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/ck48_compare")
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        help="extra config override for every run, e.g. -o tasks.0.center_loss_weight=0",
    )
    p.add_argument("--name", default="ck48_compare", help="results file stem")
    p.add_argument(
        "--rerender", action="store_true", help="only rewrite <name>.md from <name>.json"
    )
    args = p.parse_args()
    if args.rerender:
        rerender(args.name)
        return
    if not Path(args.root).is_dir():
        raise SystemExit(f"CK+48 not found at {args.root} (set --root or MTLKIT_CK48)")
    specs = [parse_weighter(w) for w in args.weighters]
    settings = vars(args) | {"weighters": [label for label, _ in specs]}
    rows = load_done(args.name, settings)
    done = {run_key(r) for r in rows}
    for fold in args.folds:
        for label, section in specs:
            key = (fold, label, json.dumps(section, sort_keys=True))
            if key in done:
                print(f"fold {fold} {label}: done earlier, kept", flush=True)
                continue
            t0 = time.perf_counter()
            run_dir = Path(args.out) / f"fold{fold}_{label}"
            cfg = load_config(
                REPO / "configs" / "ck48.yaml",
                [
                    f"data.root={args.root}",
                    f"data.fold={fold}",
                    f"weighter={json.dumps(section)}",
                    f"trainer.epochs={args.epochs}",
                    f"backbone.model_name={args.model}",
                    f"seed={args.seed}",
                    f"output_dir={run_dir}",
                    "trainer.progress=off",
                    *args.override,
                ],
            )
            results = Trainer(cfg).fit()
            test = results["metrics"]["test"]
            val = results["metrics"].get("val", {})
            row = {
                "fold": fold,
                "weighter": label,
                "weighter_config": section,
                "expression_accuracy": test["expression"]["accuracy"],
                "expression_macro_f1": test["expression"]["macro_f1"],
                "verification_accuracy": test["face_identity"].get("verification_accuracy"),
                "verification_auc": test["face_identity"].get("verification_auc"),
                "val_expression_accuracy": val.get("expression", {}).get("accuracy"),
                "val_verification_accuracy": val.get("face_identity", {}).get(
                    "verification_accuracy"
                ),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
                "trajectory": trajectory(run_dir, cfg.task_ids()),
            }
            rows.append(row)
            print({k: v for k, v in row.items() if k != "trajectory"}, flush=True)
            write_results(args.name, {"rows": rows, "args": settings}, render(rows, settings))
    md = render(rows, settings)
    write_results(args.name, {"rows": rows, "args": settings}, md)
    plot_weights(args.name, rows)
    print(md)


if __name__ == "__main__":
    main()
