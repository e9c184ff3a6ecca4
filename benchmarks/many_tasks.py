"""Cost of every weighter as the number of tasks grows: time per step and peak memory at
T = 2, 5, 10, 20, 40, as ratios to ``equal`` at the same T, with the published CelebA ratios.

Each T is one run of ``weighter_cost.py --tasks T`` (interleaved rounds of real Trainer steps,
peak memory in fresh subprocesses), written to ``results/many_tasks_T<T>_<model>.json``; a T whose
file exists is skipped, so a killed sweep continues where it stopped. This script then collects
them into ``results/many_tasks_<model>.{json,md}`` and a plot of time and memory against T.

    python many_tasks.py --model resnet18 --tasks 2 5 10 20 40 --rounds 3 --steps 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import PLOTS, RESULTS, write_results

PUBLISHED_CELEBA_T40 = {"famo": 1.08, "cagrad": 4.47, "mgda": 5.58, "nash_mtl": 6.11,
                        "pcgrad": 8.08}
"""Training time per epoch relative to linear scalarisation on CelebA (40 tasks), FAMO paper
(Liu et al. 2023), Table 6."""


def run_one(t: int, args: argparse.Namespace) -> Path:
    name = f"many_tasks_T{t}_{args.model}"
    path = RESULTS / f"{name}.json"
    if path.exists():
        print(f"T={t}: {path.name} exists, kept", flush=True)
        return path
    cmd = [sys.executable, str(Path(__file__).with_name("weighter_cost.py")), "--tasks", str(t),
           "--model", args.model, "--rounds", str(args.rounds), "--steps", str(args.steps),
           "--batch", str(args.batch), "--image-size", str(args.image_size), "--name", name]
    if args.weighters:
        cmd += ["--weighters", args.weighters]
    if args.no_memory:
        cmd.append("--no-memory")
    # every parameter-gradient trainer holds a [T, D] buffer: time them a few at a time at large T
    cmd += ["--group-size", str(0 if t <= 10 else max(2, 80 // t))]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return path


def collect(paths: dict[int, Path]) -> dict[str, dict[int, dict[str, float | None]]]:
    """Per weighter and T: median time ratio to equal, and extra peak MiB over equal."""
    out: dict[str, dict[int, dict[str, float | None]]] = {}
    for t, path in sorted(paths.items()):
        data = json.loads(path.read_text())
        rerun = path.with_name(path.stem + "_rerun.json")
        if rerun.exists():  # rows re-timed after a disturbed round replace the first timing
            data["timing"].update(json.loads(rerun.read_text())["timing"])
        memory = data.get("memory", {})
        base = memory.get("equal", {}).get("peak_mib")
        for name, row in data["timing"].items():
            if name.startswith("_"):
                continue
            peak = memory.get(name, {}).get("peak_mib")
            out.setdefault(name, {})[t] = {
                "ratio": row["ratio"]["median"],
                "extra_mib": None if peak is None or base is None else peak - base,
            }
    return out


def markdown(table: dict[str, dict[int, dict[str, float | None]]], ts: list[int],
             args: argparse.Namespace) -> str:
    def cell(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    md = (
        f"Model `{args.model}`, {args.image_size} px, batch {args.batch}, T classification tasks,"
        f" {args.rounds} interleaved rounds of {args.steps} steps per T, CPU. Time: median ratio"
        " to `equal` at the same T. Memory: extra peak MiB over `equal`. Published: CelebA, 40"
        " tasks, FAMO paper.\n\n| weighter | "
        + " | ".join(f"T={t}" for t in ts) + " | published T=40 | "
        + " | ".join(f"+MiB T={t}" for t in ts) + " |\n|---|" + "---|" * (2 * len(ts) + 1) + "\n"
    )
    for name in sorted(table, key=lambda n: (n != "equal", n)):
        row = table[name]
        md += f"| `{name}` | " + " | ".join(
            cell(row.get(t, {}).get("ratio"), ".2f") for t in ts
        ) + f" | {cell(PUBLISHED_CELEBA_T40.get(name), '.2f')} | " + " | ".join(
            cell(row.get(t, {}).get("extra_mib"), ".0f") for t in ts
        ) + " |\n"
    return md


def reruns(paths: dict[int, Path]) -> str:
    """Which rows were timed again (``many_tasks_T<T>_<model>_rerun.json``) and why."""
    out = ""
    for t, path in sorted(paths.items()):
        rerun = path.with_name(path.stem + "_rerun.json")
        if rerun.exists():
            data = json.loads(rerun.read_text())
            skip = ("equal", "hand-written loop")
            names = sorted(k for k in data["timing"] if not k.startswith("_") and k not in skip)
            out += (
                f"\nAt T = {t}, {', '.join(f'`{n}`' for n in names)} were timed again"
                f" (`{rerun.name}`: `{data.get('command', '')}`): a round of the first run"
                " coincided with other heavy work on the machine (a test suite), and with two"
                " rounds one disturbed round moves the median by up to 8x. Their memory column is"
                " the first run's.\n"
            )
    return out


CHEAP_K = (4, 10)
"""``update_every`` periods whose cost is derived in the cheap-settings table."""


def every_k(ratio: float, k: int) -> float:
    """Time ratio of ``update_every: k`` from the full method's ratio ``r``: one full step and
    ``k - 1`` steps of one weighted-loss backward, which cost what an ``equal`` step costs:
    ``(r + k - 1) / k``."""
    return (ratio + k - 1) / k


def _measured(name: str) -> dict[str, float]:
    """Median time ratios from a ``weighter_cost.py --update-every/--batched`` results file."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    timing = json.loads(path.read_text())["timing"]
    return {k: v["ratio"]["median"] for k, v in timing.items() if not k.startswith("_")}


def _takes_update_every() -> set[str]:
    """Registered weighters with an ``update_every`` option (DB-MTL and MoCo have none)."""
    from mtlkit.plugins import PluginHost

    host = PluginHost()
    names = set()
    for entry in host.weighters.entries():
        options = getattr(host.weighters.resolve(entry.name), "Options", None)
        if "update_every" in getattr(options, "model_fields", {}):
            names.add(entry.name)
    return names


def cheap_settings(table: dict[str, dict[int, dict[str, float | None]]], t: int,
                   model: str) -> str:
    """The parameter-gradient methods at T = ``t``: full, ``update_every`` (derived from the
    measured full ratio, checked against a measured run at T = 10), the representation variant
    and the batched backward where measured, against the published CelebA ratio."""
    full = {n: r[t]["ratio"] for n, r in table.items() if t in r and r[t]["ratio"] is not None}
    param = sorted(n for n, r in full.items() if r > 2.0 and "-" not in n and "+" not in n)
    if not param:
        return ""
    batched = _measured(f"cheap_settings_T{t}_{model}")
    periodic = _takes_update_every()
    check = _measured(f"cheap_settings_T10_{model}")
    md = (
        f"\n### Cheap settings at T = {t}\n\n"
        "`update_every: k` columns are derived, not timed: one full step and k - 1 steps of one"
        " weighted-loss backward (an `equal` step), `(r + k - 1) / k` from the measured full"
        " ratio r (n/a: the method has no `update_every`)."
    )
    if check:
        pairs = [
            (n.removesuffix("-every10"), v) for n, v in check.items() if n.endswith("-every10")
        ]
        md += " Check at T = 10 (`cheap_settings_T10`, 10 steps per round): " + "; ".join(
            f"`{n}` every 10 measured {v:.2f}x, derived {every_k(check[n], 10):.2f}x from its"
            f" measured {check[n]:.2f}x" for n, v in pairs if n in check
        ) + "."
    md += (
        "\n\n| method | full | "
        + " | ".join(f"update_every {k}" for k in CHEAP_K)
        + " | rep variant | batched backward | published (CelebA, T=40) |\n|---|"
        + "---|" * (len(CHEAP_K) + 4) + "\n"
    )
    for n in param:
        rep = full.get(f"{n}-rep")
        bat = batched.get(f"{n}+batched")
        pub = PUBLISHED_CELEBA_T40.get(n)
        md += (
            f"| `{n}` | {full[n]:.2f} | "
            + " | ".join(
                f"{every_k(full[n], k):.2f}" if n in periodic else "n/a" for k in CHEAP_K
            )
            + f" | {'n/a' if rep is None else f'{rep:.2f}'}"
            + f" | {'n/a' if bat is None else f'{bat:.2f}'}"
            + f" | {'n/a' if pub is None else f'{pub:.2f}'} |\n"
        )
    return md


def plot(table: dict[str, dict[int, dict[str, float | None]]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, row in sorted(table.items()):
        ts = sorted(row)
        a.plot(ts, [row[t]["ratio"] for t in ts], marker="o", label=name)
        mem = [(t, row[t]["extra_mib"]) for t in ts if row[t]["extra_mib"] is not None]
        if mem:
            b.plot([t for t, _ in mem], [m for _, m in mem], marker="o", label=name)
    a.set(xlabel="tasks T", ylabel="time per step / equal", xscale="log")
    b.set(xlabel="tasks T", ylabel="extra peak MiB over equal", xscale="log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--tasks", nargs="+", type=int, default=[2, 5, 10, 20, 40])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--weighters", default=None, help="comma-separated subset (equal is added)")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args()
    paths = {t: run_one(t, args) for t in args.tasks}
    table = collect(paths)
    md = markdown(table, sorted(paths), args) + reruns(paths) + cheap_settings(
        table, max(paths), args.model
    )
    write_results(f"many_tasks_{args.model}", {"table": table, "args": vars(args)}, md)
    PLOTS.mkdir(parents=True, exist_ok=True)
    plot(table, PLOTS / f"many_tasks_{args.model}.png")
    print(md)


if __name__ == "__main__":
    main()
