"""Count the deliberately bad inputs the test suite tries, and how each one ended.

Runs ``pytest -m bad_input`` over ``tests`` and ``plugins/mtlkit-face/tests`` in this process
with a small collector plugin. Every test marked ``bad_input(category)`` is one input tried:
- passed: a named error (or, for inputs that must work, e.g. unusual image modes, handled; for
  inputs that are legal but likely wrong, e.g. a rare label close to another class's, a notice
  naming them; for data another source holds, e.g. another data set evaluated, scored with a
  notice);
- failed on an assertion (wrong exit code, no error, wrong message): a silent failure;
- failed on any other exception (something escaped from deep inside): a bare traceback.
Skipped tests (e.g. a check that needs hardware this machine lacks) are not counted as tried.

Writes ``benchmarks/results/reliability_counts.json`` and rewrites the table between
``<!-- counts:start -->`` and ``<!-- counts:end -->`` in ``docs/reliability.md``.
Exit status: 0 when there are no silent failures and no bare tracebacks, else 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from _common import RESULTS, machine

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
START, END = "<!-- counts:start -->", "<!-- counts:end -->"
TEST_PATHS = ["tests", "plugins/mtlkit-face/tests"]
PYTEST_ARGS = ["-q", "-m", "bad_input", *TEST_PATHS]


class Collector:
    """Pytest plugin: category, outcome and failing exception type of every bad_input test."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            mark = item.get_closest_marker("bad_input")
            if mark is None:
                continue
            category = mark.args[0] if mark.args else mark.kwargs.get("category", "?")
            self.tests[item.nodeid] = {
                "category": str(category),
                "id": item.nodeid,
                "outcome": None,
                "exception": None,
            }

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        outcome = yield
        report = outcome.get_result()
        entry = self.tests.get(item.nodeid)
        if entry is None:
            return
        if report.failed:
            entry["outcome"] = "failed"
            if entry["exception"] is None and call.excinfo is not None:
                entry["exception"] = call.excinfo.type.__name__
                entry["phase"] = report.when
        elif report.skipped and entry["outcome"] is None:
            entry["outcome"] = "skipped"
        elif report.when == "call" and report.passed and entry["outcome"] is None:
            entry["outcome"] = "passed"


ASSERTION_FAILURES = {"AssertionError", "Failed"}  # Failed: pytest.raises(...) did not raise


def classify(entry: dict[str, Any]) -> str:
    """passed / skipped / silent / traceback (see the module docstring)."""
    outcome = entry["outcome"]
    if outcome in ("passed", "skipped"):
        return outcome
    if outcome is None:  # collected, never reported (run interrupted): not a pass
        return "silent"
    return "silent" if entry["exception"] in ASSERTION_FAILURES else "traceback"


def tabulate(tests: list[dict[str, Any]]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    rows: dict[str, dict[str, int]] = {}
    for t in tests:
        row = rows.setdefault(
            t["category"], {"tried": 0, "handled": 0, "silent": 0, "traceback": 0, "skipped": 0}
        )
        kind = t["result"]
        if kind == "skipped":
            row["skipped"] += 1
            continue
        row["tried"] += 1
        row["handled" if kind == "passed" else kind] += 1
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()), {})}
    return rows, total


def markdown(payload: dict[str, Any]) -> str:
    rows, total = payload["categories"], payload["total"]
    lines = [
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Date: {payload['date']} (pytest wall time {payload['seconds']:.0f} s)",
        "",
        "| category | inputs tried | named error or handled | silent failures | bare tracebacks |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['tried']} | {r['handled']} | {r['silent']} | {r['traceback']} |"
        )
    lines.append(
        f"| **total** | **{total['tried']}** | **{total['handled']}** | **{total['silent']}**"
        f" | **{total['traceback']}** |"
    )
    notes = []
    if total.get("skipped"):
        skipped = [t["id"] for t in payload["tests"] if t["result"] == "skipped"]
        notes.append(f"Skipped on this machine (not counted): {', '.join(skipped)}.")
    bad = [t for t in payload["tests"] if t["result"] in ("silent", "traceback")]
    for t in bad:
        notes.append(f"- {t['result']}: `{t['id']}` ({t['exception']})")
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def rewrite_doc(table: str) -> None:
    block = f"{START}\n{table}{END}"
    text = DOC.read_text() if DOC.exists() else "# Reliability\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    args = parser.parse_args()
    collector = Collector()
    start = dt.datetime.now()
    code = pytest.main(["--rootdir", str(REPO), *PYTEST_ARGS], plugins=[collector])
    seconds = (dt.datetime.now() - start).total_seconds()
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"pytest did not run the tests (exit {code})", file=sys.stderr)
        return 2
    tests = list(collector.tests.values())
    for t in tests:
        t["result"] = classify(t)
    categories, total = tabulate(tests)
    payload = {
        "command": f"python benchmarks/reliability_counts.py (pytest {' '.join(PYTEST_ARGS)})",
        "machine": machine(),
        "date": start.date().isoformat(),
        "seconds": round(seconds, 1),
        "total": total,
        "categories": categories,
        "tests": tests,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reliability_counts.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = markdown(payload)
    if not args.no_doc:
        rewrite_doc(table)
    print(table)
    return 0 if total.get("silent", 0) == 0 and total.get("traceback", 0) == 0 else 1


if __name__ == "__main__":
    os.chdir(REPO)  # the test paths and pyproject's pytest options are relative to the repo
    sys.exit(main())
