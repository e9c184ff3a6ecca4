"""Every code block in README.md and docs/ meant to run, runs; and generated pages are fresh.

How blocks are selected, by the fence's language:

- ``python``: executed, each in a fresh temporary directory holding a link to ``configs/``. Any
  config loaded through ``mtlkit.load_config`` gets ``TINY`` overrides appended (two training
  steps, no progress bar, no plot, output under the temporary directory), so a block that trains
  the demo stays cheap. A block with the same code as an earlier one is run once.
- ``bash``/``sh``/``console``: each command line (``\\``-continued lines joined, ``# comments``
  dropped, a ``.venv/bin/`` prefix allowed) that starts with ``mtlkit``:
  ``mtlkit plugins``, ``mtlkit config schema``, ``--help`` and ``--version`` are run (a subprocess
  of this Python); ``mtlkit config validate`` is run in-process; ``mtlkit train``,
  ``evaluate``, ``predict`` and ``export`` lines are parsed by the CLI's own parser and their
  config validated with the same ``-o`` overrides (plugin options included) instead of run.
  Other lines (``make``, ``pip``, ``torchrun``, ``pytest``) are not collected. Commands run
  from the repository root.
- ``yaml`` blocks holding a whole run config (``backbone``, ``tasks`` and ``data`` at the top) are
  validated; fragments are not collected. Other languages (``toml``, ``text``, ``mermaid``) are not.

A block not meant to run is marked by the HTML comment ``<!-- no-run -->`` on the last non-blank
line before its opening fence (it is invisible on GitHub and in the site); it is collected as a
skipped test. Blocks of a worked example under ``docs/examples/<dist>/`` are skipped when that
distribution is not installed (``make test`` does not install it; ``.ci/run`` does and then runs
``pytest tests/test_docs_snippets.py -k <dist>``).

Static checks of README "Using it" (comments vs. run directories, resume chains) live in
``tests/test_docs_examples.py``; this file only makes sure the blocks work.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

import mtlkit
import mtlkit.config
from mtlkit.cli import _parser, main
from mtlkit.plugins import get_plugin_manager, reset_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
TINY = [
    "trainer.max_steps=2",
    "trainer.eval_every=0",
    "trainer.progress=off",
    "trainer.plot=false",
    "output_dir=runs/doc-snippet",
]
"""Appended to every override list a Python block passes to ``load_config``."""
SUBPROCESS = {("plugins",), ("config", "schema"), ("--help",), ("--version",)}
"""Command prefixes run as a real ``mtlkit`` process (cheap: none imports torch)."""
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    no_run: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def parse_blocks(path: Path) -> list[Block]:
    """Fenced blocks of a Markdown file, with the ``<!-- no-run -->`` marker resolved."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, lang = m["indent"], m["fence"], m["lang"].lower()
        prev = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        blocks.append(Block(path, i + 1, lang, "\n".join(body) + "\n", prev == NO_RUN))
        i = j + 1
    return blocks


def example_dist(path: Path) -> str | None:
    """The distribution name of the worked example a page belongs to, if any."""
    try:
        rel = path.relative_to(DOCS / "examples")
    except ValueError:
        return None
    pyproject = DOCS / "examples" / rel.parts[0] / "pyproject.toml"
    if len(rel.parts) < 2 or not pyproject.is_file():
        return None
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]


def installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def command_lines(code: str) -> list[tuple[int, list[str]]]:
    """``(offset, argv)`` of each ``mtlkit`` command in a shell block."""
    out = []
    joined: list[tuple[int, str]] = []
    start, acc = 0, ""
    for k, line in enumerate(code.splitlines()):
        if not acc:
            start = k
        if line.rstrip().endswith("\\"):
            acc += line.rstrip()[:-1] + " "
            continue
        joined.append((start, acc + line))
        acc = ""
    for offset, line in joined:
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:]
        if not text or text.startswith("#"):
            continue
        argv = shlex.split(text, comments=True)
        if argv and (argv[0] == "mtlkit" or argv[0].endswith("/mtlkit")):
            out.append((offset, ["mtlkit", *argv[1:]]))
    return out


def is_run_config(code: str) -> bool:
    try:
        data = yaml.safe_load(code)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and {"backbone", "tasks", "data"} <= set(data)


@dataclass(frozen=True)
class Case:
    kind: str  # python | command | yaml
    block: Block
    argv: tuple[str, ...] = ()
    line: int = 0
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.block.path.relative_to(ROOT)}:{self.line or self.block.line}"


def collect() -> list[Case]:
    cases: list[Case] = []
    seen_python: dict[str, str] = {}
    for path in doc_files():
        dist = example_dist(path)
        missing = f"{dist} is not installed" if dist and not installed(dist) else None
        for b in parse_blocks(path):
            skip = "marked <!-- no-run -->" if b.no_run else missing
            if b.lang in ("python", "py"):
                first = seen_python.setdefault(b.code, b.where)
                if first != b.where and skip is None:
                    skip = f"same code as {first}, run there"
                cases.append(Case("python", b, skip=skip))
            elif b.lang in ("bash", "sh", "shell", "console"):
                for offset, argv in command_lines(b.code):
                    cases.append(Case("command", b, tuple(argv), b.line + 1 + offset, skip))
            elif b.lang in ("yaml", "yml") and is_run_config(b.code):
                cases.append(Case("yaml", b, skip=skip))
    return cases


CASES = collect()


def test_the_collector_finds_the_documented_blocks() -> None:
    """Guard against a parser change that silently collects nothing."""
    kinds = {(c.kind, c.block.path.name) for c in CASES}
    assert ("python", "README.md") in kinds
    assert ("command", "README.md") in kinds
    assert ("python", "getting-started.md") in kinds
    assert any(c.argv[:3] == ("mtlkit", "config", "validate") for c in CASES)
    assert any(c.argv[:2] == ("mtlkit", "train") for c in CASES)


@pytest.fixture
def fresh_plugins() -> Any:
    reset_plugin_manager(None)
    yield
    reset_plugin_manager(None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_snippet(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_plugins: None,
) -> None:
    if case.skip:
        pytest.skip(case.skip)
    if case.kind == "python":
        run_python(case.block, tmp_path, monkeypatch)
    elif case.kind == "yaml":
        config = mtlkit.config.load_config(data=yaml.safe_load(case.block.code))
        mtlkit.config.resolve_run(config, get_plugin_manager())
    else:
        run_command(list(case.argv), monkeypatch, capsys)


def run_python(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    real = mtlkit.config.load_config

    def tiny(path: Any = None, overrides: Any = (), data: Any = None) -> Any:
        return real(path, [*overrides, *TINY], data)

    monkeypatch.setattr(mtlkit.config, "load_config", tiny)
    monkeypatch.setattr(mtlkit, "load_config", tiny, raising=False)
    code = compile(block.code, block.where, "exec")
    exec(code, {"__name__": "__doc_snippet__"})


def run_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    args = argv[1:]
    if any(tuple(args[: len(p)]) == p for p in SUBPROCESS):
        proc = subprocess.run(
            [sys.executable, "-m", "mtlkit", *args], capture_output=True, text=True, cwd=ROOT
        )
        assert proc.returncode == 0, proc.stderr
        if "--json" in args or args[:2] == ["config", "schema"]:
            json.loads(proc.stdout)
        return
    if args[:2] == ["config", "validate"]:
        code = main(args)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "valid" in captured.out
        return
    parsed = _parser().parse_args(args)  # exits (fails) on a bad command line
    assert parsed.command in ("train", "evaluate", "predict", "export", "data"), (
        f"no rule for {shlex.join(argv)}"
    )
    config = mtlkit.config.load_config(ROOT / parsed.config, parsed.override)
    mtlkit.config.resolve_run(config, get_plugin_manager())


# --- generated or derived pages ----------------------------------------------------------------


def _generator() -> Any:
    script = DOCS / "gen_config_reference.py"
    spec = importlib.util.spec_from_file_location("gen_config_reference", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_current(fresh_plugins: None) -> None:
    gen = _generator()
    try:
        text = gen.render()
    except SystemExit as exc:  # a shipped plugin missing or broken
        pytest.fail(str(exc))
    committed = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert text == committed, (
        "docs/config-reference.md is stale: run `.venv/bin/python docs/gen_config_reference.py`"
        " and commit the result"
    )


NEEDS_WORDS = {
    "parameters": "parameter gradients",
    "representation": "representation gradients",
    "last_layer": "last-layer gradients",
}


def test_weighting_page_lists_every_weighter_with_its_needs(fresh_plugins: None) -> None:
    """docs/weighting.md: one row per weighter shipped here; its needs match ``Weighter.needs``."""
    gen = _generator()
    shipped = set(gen.shipped_distributions())
    registry = get_plugin_manager().weighters
    names = [e.name for e in registry.entries() if e.dist in shipped]
    rows = {}
    for line in (DOCS / "weighting.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([\w-]+)`", cells[0]) if len(cells) >= 4 else None
        if m:
            rows[m[1]] = cells
    assert sorted(rows) == sorted(names), "docs/weighting.md and the registered weighters differ"
    for name in names:
        needs = registry.resolve(name).needs
        # "losses" is named on the loss paths only (every weighter gets them)
        words = ["losses"] if needs.grads == "none" else [NEEDS_WORDS[needs.grads]]
        words += [w for flag, w in (
            ("features", "features"),
            ("after_step", "after-step"),
            ("counters", "counters"),
            ("step_metrics", "step metrics"),
        ) if getattr(needs, flag)]
        declared = rows[name][2].split(";")[0].strip()
        assert declared == ", ".join(words), f"{name}: page says {declared!r}, class {needs}"
