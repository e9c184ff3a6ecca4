"""Wall time of ``mtlkit --help`` and ``mtlkit plugins`` (fresh interpreter each run)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from _common import summary, write_results


def time_command(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("mtlkit") or sys.executable
    prefix = [exe] if exe.endswith("mtlkit") else [exe, "-m", "mtlkit"]
    rows = {}
    for label, extra in (
        ("mtlkit --help", ["--help"]),
        ("mtlkit plugins", ["plugins"]),
        ("python -c pass", None),
    ):
        cmd = [sys.executable, "-c", "pass"] if extra is None else prefix + extra
        rows[label] = summary(time_command(cmd, args.runs))
    md = "| command | median s | min s | max s |\n|---|---|---|---|\n"
    md += "".join(
        f"| `{k}` | {v['median']:.3f} | {v['min']:.3f} | {v['max']:.3f} |\n"
        for k, v in rows.items()
    )
    write_results("cli_startup", {"runs": args.runs, "results": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
