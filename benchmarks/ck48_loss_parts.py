"""What the identity loss is made of at the end of a CK+48 run: cross-entropy vs center loss.

Loads ``last.pt`` of runs written by ``ck48_compare.py`` and evaluates, on each run's training
split without augmentation, the identity cross-entropy, the weighted center-loss term, training
identification accuracy and the expression cross-entropy. Difficulty-based weighting reads the
sum of the identity terms, so their split says what "difficulty" it responds to.

    python ck48_loss_parts.py --runs runs/ck48_compare --folds 0 1 --weighters equal dynamic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import write_results

from mtlkit.config import load_config
from mtlkit.trainer import Trainer


@torch.no_grad()
def loss_parts(run: Path, root: str | None) -> dict[str, float]:
    """Loss terms of one finished run over its whole training split (eval mode, no augmentation).

    The model is rebuilt from the run's own config (``results.json``), so any ``--model`` or
    override the run used applies here too.
    """
    from mtlkit_face.tasks.heads import center_loss

    saved = json.loads((run / "results.json").read_text())["config"]
    overrides = [f"output_dir={run}/_loss_parts", "trainer.progress=off"]
    if root is not None:
        overrides.append(f"data.root={root}")
    trainer = Trainer(load_config(data=saved, overrides=overrides))
    state = torch.load(run / "last.pt", weights_only=True)
    trainer.model.load_state_dict(state["model"])
    trainer.model.eval()
    identity = next(t for t in trainer.tasks if t.name == "face_identity")
    weight = identity.options.center_loss_weight
    data = trainer.data.train
    batch = data.batch(torch.arange(len(data)), train=False)
    _, out = trainer.model(batch["input"])
    ident, y = out["face_identity"], batch["targets"]["face_identity"]
    m = y >= 0
    ce = F.cross_entropy(ident["logits"][m], y[m])
    center = (
        # in the space the run's task measured it (normalised by default since 0.2)
        weight
        * center_loss(identity._center_space(ident["embedding"][m]), ident["centers"], y[m]).mean()
        if "centers" in ident
        else torch.zeros(())
    )
    ye = batch["targets"]["expression"]
    me = ye >= 0
    return {
        "identity_ce": float(ce),
        "weighted_center_loss": float(center),
        "train_identification_accuracy": float(
            (ident["logits"][m].argmax(1) == y[m]).float().mean()
        ),
        "expression_ce": float(F.cross_entropy(out["expression"][me], ye[me])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", default=None, help="CK+48 folder, if moved since the runs")
    p.add_argument("--runs", default="runs/ck48_compare", help="ck48_compare.py's --out")
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--weighters", nargs="+", default=["equal", "dynamic"])
    p.add_argument("--name", default="ck48_loss_parts", help="results file stem")
    args = p.parse_args()
    rows = []
    for fold in args.folds:
        for weighter in args.weighters:
            run = Path(args.runs) / f"fold{fold}_{weighter}"
            if not (run / "last.pt").is_file() or not (run / "results.json").is_file():
                raise SystemExit(f"{run}: no finished run (last.pt, results.json); run"
                                 " ck48_compare.py first")
            parts = loss_parts(run, args.root)
            rows.append({"fold": fold, "weighter": weighter, **parts})
            print(rows[-1], flush=True)
    md = (
        f"End-of-training loss terms on the training split (eval mode, no augmentation) of the"
        f" `{args.runs}` runs.\n\n"
        "| fold | weighter | identity CE | weighted center loss | train identification acc |"
        " expression CE |\n|---|---|---|---|---|---|\n"
    )
    for r in rows:
        md += (
            f"| {r['fold']} | `{r['weighter']}` | {r['identity_ce']:.3f} |"
            f" {r['weighted_center_loss']:.3f} | {r['train_identification_accuracy']:.3f} |"
            f" {r['expression_ce']:.3f} |\n"
        )
    write_results(args.name, {"rows": rows, "args": vars(args)}, md)
    print(md)


if __name__ == "__main__":
    main()
