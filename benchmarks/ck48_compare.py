"""CK+48, subject-kfold: expression and verification accuracy of each weighter on the same split.

Every run uses configs/ck48.yaml with only the weighter changed (same seed, data, backbone and
schedule). The last epoch is reported; nothing is selected on the test fold.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import write_results

from mtlkit.config import load_config
from mtlkit.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


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
    args = p.parse_args()
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
    md = (
        f"CK+48, subject-kfold (10 folds over sorted subjects), folds {args.folds}, timm"
        f" `{args.model}` from scratch at 48 px grayscale, {args.epochs} epochs, seed {args.seed},"
        " last epoch reported (no selection on the test fold)."
        + (f" Overrides: {', '.join(f'`{o}`' for o in args.override)}." if args.override else "")
        + "\n\n"
        "| fold | weighter | expression acc | expression macro-F1 | verification acc |"
        " verification AUC | val expr acc | val verif acc | minutes |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        md += (
            f"| {r['fold']} | `{r['weighter']}` | {f(r['expression_accuracy'])} |"
            f" {f(r['expression_macro_f1'])} | {f(r['verification_accuracy'])} |"
            f" {f(r['verification_auc'])} | {f(r['val_expression_accuracy'])} |"
            f" {f(r['val_verification_accuracy'])} | {r['minutes']} |\n"
        )
    write_results(args.name, {"rows": rows, "args": vars(args)}, md)
    print(md)


if __name__ == "__main__":
    main()
