"""CK+48, subject-kfold: expression and verification accuracy of each weighter on the same split.

Every run uses configs/ck48.yaml with only the weighter changed (same seed, data, backbone and
schedule). The last epoch is reported; nothing is selected on the test fold.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, write_results

from mtlkit.config import load_config
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
    return md


def rerender(name: str) -> None:
    """Rewrite ``<name>.md`` from ``<name>.json`` (no training), keeping the run's command."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    meta = {k: data[k] for k in ("command", "machine", "date")}
    rows, args = data["rows"], data["args"]
    write_results(name, {"rows": rows, "args": args}, render(rows, args), meta)


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
    rows = []
    for fold in args.folds:
        for weighter in args.weighters:
            t0 = time.perf_counter()
            cfg = load_config(
                REPO / "configs" / "ck48.yaml",
                [
                    f"data.root={args.root}",
                    f"data.fold={fold}",
                    f"weighter={{name: {weighter}}}",
                    f"trainer.epochs={args.epochs}",
                    f"backbone.model_name={args.model}",
                    f"seed={args.seed}",
                    f"output_dir={args.out}/fold{fold}_{weighter}",
                    "trainer.progress=off",
                    *args.override,
                ],
            )
            results = Trainer(cfg).fit()
            test = results["metrics"]["test"]
            val = results["metrics"].get("val", {})
            row = {
                "fold": fold,
                "weighter": weighter,
                "expression_accuracy": test["expression"]["accuracy"],
                "expression_macro_f1": test["expression"]["macro_f1"],
                "verification_accuracy": test["face_identity"].get("verification_accuracy"),
                "verification_auc": test["face_identity"].get("verification_auc"),
                "val_expression_accuracy": val.get("expression", {}).get("accuracy"),
                "val_verification_accuracy": val.get("face_identity", {}).get(
                    "verification_accuracy"
                ),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
            }
            rows.append(row)
            print(row, flush=True)
    md = render(rows, vars(args))
    write_results(args.name, {"rows": rows, "args": vars(args)}, md)
    print(md)


if __name__ == "__main__":
    main()
