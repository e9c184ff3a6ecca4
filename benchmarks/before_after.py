"""One timing script, run alternately in two checkouts (before and after a change), in one run.

Each repeat runs the script once in each checkout, the order swapping every repeat, with that
checkout's own virtualenv, and reads back the JSON the script wrote; the scripts' committed result
files are restored afterwards. Scripts that time mtlkit against a hand-written loop in the same
process (``trainer_overhead.py``, ``functional_overhead.py``) report a ratio that is already
normalised for the machine's speed at that moment; the table gives it and the ms/step beside it.

    python benchmarks/before_after.py --before /path/to/old/checkout \\
        --script trainer_overhead.py -- --backbone mlp --image-size 32 --rounds 9 --steps 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from _common import RESULTS, write_results

HERE = Path(__file__).resolve().parents[1]
RESULT_NAMES = {
    "trainer_overhead.py": ("trainer_overhead_{backbone}", "trainer_ms_per_step"),
    "functional_overhead.py": ("functional_overhead_{backbone}", "functional_ms_per_step"),
}
"""Script -> (the result file it writes, the per-step time of mtlkit's side in it)."""


def run_once(checkout: Path, script: str, args: list[str], result: str) -> dict[str, Any]:
    """Run ``script`` from ``checkout`` with its own venv; the JSON it wrote."""
    python = checkout / ".venv" / "bin" / "python"
    subprocess.run([str(python), str(checkout / "benchmarks" / script), *args], check=True,
                   cwd=checkout / "benchmarks", stdout=subprocess.DEVNULL)
    return json.loads((checkout / "benchmarks" / "results" / f"{result}.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="the other checkout (with .venv)")
    p.add_argument("--after", type=Path, default=HERE, help="default: this checkout")
    p.add_argument("--script", required=True, choices=sorted(RESULT_NAMES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backbone", default="resnet18", help="passed on to the script")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="after --: the script's arguments")
    args = p.parse_args()
    rest = [a for a in args.rest if a != "--"]
    name_tpl, ms_key = RESULT_NAMES[args.script]
    result = name_tpl.format(backbone=args.backbone)
    script_args = ["--backbone", args.backbone, *rest]
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    kept = [c / "benchmarks" / "results" / f"{result}.{ext}"
            for c in sides.values() for ext in ("json", "md")]
    saved = {path: path.read_bytes() for path in kept if path.exists()}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for r in range(args.repeats):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for side in order:
                out = run_once(sides[side], args.script, script_args, result)
                runs[side].append({"ratio": out["ratio"]["median"],
                                   "control": out["control_ratio"]["median"],
                                   "ms_per_step": out[ms_key]["median"]})
                print(side, runs[side][-1], flush=True)
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
    rows = {
        side: {k: statistics.median(r[k] for r in runs[side])
               for k in ("ratio", "control", "ms_per_step")}
        for side in runs
    }
    md = (
        f"`{args.script}` {' '.join(script_args)}, {args.repeats} repeats per checkout,"
        " alternating; each value is the median over repeats of the script's own median.\n\n"
        "| checkout | ratio to the hand loop | A/A control | mtlkit ms/step |\n|---|---|---|---|\n"
        + "".join(f"| {side} (`{sides[side]}`) | {rows[side]['ratio']:.3f} |"
                  f" {rows[side]['control']:.3f} | {rows[side]['ms_per_step']:.2f} |\n"
                  for side in ("before", "after"))
        + f"\nAfter / before, ratio to the hand loop: "
        f"{rows['after']['ratio'] / rows['before']['ratio']:.3f}.\n"
    )
    write_results(f"before_after_{Path(args.script).stem}_{args.backbone}",
                  {"rows": rows, "runs": runs, "checkouts": {k: str(v) for k, v in sides.items()}},
                  md)
    print(md)
    print("written to", RESULTS)


if __name__ == "__main__":
    main()
