r"""Re-train one finished sweep cell from its stored config and compare it with its record, bit for
bit: every metric of every split and every per-epoch history value must be equal as floats.

    python benchmarks/rerun_cell.py \
        benchmarks/results/sweeps/ck48_pretrained/dynamic_fold0-e5c1cf91c3

The cell ran in a sweep with ``--jobs 2``, i.e. one thread (``trainer.num_threads`` is not part of
a cell's config hash); ``--threads`` (default 1) must match for the sums to round the same. Data
paths come from the environment as in the sweep (``MTLKIT_CK48``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0": leaf}`` for nested dicts and lists."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def compare(record: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """The keys of ``metrics`` and ``history`` whose values differ (timings are not compared)."""
    differ = []
    for part in ("metrics", "history", "steps", "epochs"):
        want, got = flatten(record.get(part)), flatten(rerun.get(part))
        for key in sorted(set(want) | set(got)):
            if key.endswith("seconds"):
                continue
            if want.get(key) != got.get(key):
                differ.append(f"{part}.{key}: {want.get(key)!r} != {got.get(key)!r}")
    return differ


def _record(cell: Path, tmp: Path) -> tuple[dict[str, Any], Path]:
    """The cell's results and config file: its folder's, else its packed line's (the config
    written to ``tmp``)."""
    if (cell / "results.json").is_file():
        return json.loads((cell / "results.json").read_text()), cell / "config.yaml"
    from mtlkit.cellpack import full_results, pack_path, read_pack

    packed = read_pack(pack_path(cell.parent)).get(cell.name)
    if packed is None:
        sys.exit(f"{cell}: no results.json, and not packed in {pack_path(cell.parent)}")
    record = full_results(packed)
    import yaml

    config = tmp / "config.yaml"  # as the sweep writes it (mtlkit.sweep.SweepRunner._prepare)
    config.write_text(yaml.safe_dump(record["config"], sort_keys=False))
    return record, config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell", type=Path, help="a finished cell folder (config.yaml, results.json),"
                   " or where it would be when the cell is packed in <sweep folder>.jsonl")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record, config = _record(args.cell, Path(tmp))
        out = Path(tmp) / "run"
        subprocess.run(
            [sys.executable, "-m", "mtlkit", "train", str(config),
             "-o", f"output_dir={out}", "-o", f"trainer.num_threads={args.threads}",
             "-o", "trainer.progress=off"],
            check=True, stdout=subprocess.DEVNULL,
        )
        rerun = json.loads((out / "results.json").read_text())
    differ = compare(record, rerun)
    n = len(flatten(record["metrics"])) + len(flatten(record["history"]))
    print(f"{args.cell.name}: {n} values compared, {len(differ)} differ")
    for line in differ[:20]:
        print("  ", line)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
