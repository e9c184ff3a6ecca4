"""README "Using it": each command parses, its config validates, and it does what its comment says.

Static checks only (no training): a comment naming ``runs/X`` must match the run directory the
line writes or reads, ``--resume`` must repeat an earlier run's config and overrides, and an
evaluated checkpoint must come from an earlier line's run with the same model.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from mtlkit.cli import _parser
from mtlkit.config import config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
MODEL_SECTIONS = ("backbone", "tasks", "weighter")


@dataclass
class Example:
    """One README command line, parsed as the CLI would parse it."""

    line: str
    comment: str
    args: Any

    @property
    def config(self) -> dict[str, Any]:
        return config_to_dict(load_config(ROOT / self.args.config, self.args.override))

    @property
    def run_dir(self) -> PurePosixPath:
        return PurePosixPath(self.config["output_dir"])

    def comment_runs(self) -> list[PurePosixPath]:
        return [PurePosixPath(p.rstrip(".,;:)")) for p in re.findall(r"runs/\S+", self.comment)]


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _split(line: str) -> tuple[str, str]:
    """Command and trailing ``# comment``; a ``#`` inside quotes belongs to the command."""
    for match in re.finditer(r"\s+#", line):
        head = line[: match.start()]
        try:
            shlex.split(head)
        except ValueError:  # inside an open quote
            continue
        return head.strip(), line[match.end() :].strip()
    return line.strip(), ""


USING_IT = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Using it")
LINES = [
    _split(ln) for block in _blocks(USING_IT, "bash") for ln in block.splitlines() if ln.strip()
]


def _examples() -> list[Example]:
    out = []
    for command, comment in LINES:
        argv = shlex.split(command)
        assert argv[0] == "mtlkit", command
        out.append(Example(command, comment, _parser().parse_args(argv[1:])))
    return out


EXAMPLES = _examples()
RUNS = [e for e in EXAMPLES if e.args.command in ("train", "evaluate")]


def test_there_are_train_resume_and_evaluate_examples() -> None:
    kinds = {(e.args.command, bool(getattr(e.args, "resume", False))) for e in RUNS}
    assert kinds == {("train", False), ("train", True), ("evaluate", False)}


@pytest.mark.parametrize("ex", RUNS, ids=[e.line for e in RUNS])
@pytest.mark.bad_input("docs claim")
def test_comment_names_the_run_directory_used(ex: Example) -> None:
    used = PurePosixPath(ex.args.checkpoint).parent if ex.args.command == "evaluate" else None
    where = used or ex.run_dir
    for named in ex.comment_runs():
        assert named == where or where in named.parents, (
            f"{ex.line!r}: the comment names {named} but the line uses {where}"
        )
    if used is not None:
        assert ex.run_dir == used, (
            f"{ex.line!r}: evaluates {used} but its output_dir is {ex.run_dir}; pass"
            f" -o output_dir={used} so it does not create or touch another run's folder"
        )


@pytest.mark.parametrize("ex", RUNS, ids=[e.line for e in RUNS])
@pytest.mark.bad_input("docs claim")
def test_resume_and_evaluate_follow_an_earlier_run(ex: Example) -> None:
    earlier = [e for e in RUNS[: RUNS.index(ex)] if e.args.command == "train"]
    says_resume = bool(re.search(r"\b(continue|resume)", ex.comment))
    if ex.args.command == "train":
        assert says_resume == ex.args.resume, f"{ex.line!r}: comment and --resume disagree"
        if not ex.args.resume:
            return
        same = [e for e in earlier if e.run_dir == ex.run_dir and not e.args.resume]
        assert same, f"{ex.line!r}: no earlier line trains {ex.run_dir}"
        assert (same[-1].args.config, same[-1].args.override) == (
            ex.args.config,
            ex.args.override,
        ), f"{ex.line!r}: resume with other settings than the run it continues"
        return
    ckpt = PurePosixPath(ex.args.checkpoint)
    source = [e for e in earlier if e.run_dir == ckpt.parent]
    assert source, f"{ex.line!r}: no earlier line writes {ckpt.parent}"
    trained = source[-1].config
    names = {"last.pt"} | ({"best.pt"} if trained["trainer"]["select"] == "best" else set())
    assert ckpt.name in names, f"{ex.line!r}: a run writes {sorted(names)}, not {ckpt.name}"
    for key in MODEL_SECTIONS:
        assert ex.config[key] == trained[key], f"{ex.line!r}: {key} differs from the run"


@pytest.mark.parametrize("ex", RUNS, ids=[e.line for e in RUNS])
def test_override_comments_hold(ex: Example) -> None:
    base = config_to_dict(load_config(ROOT / ex.args.config))
    pairs = [o.partition("=")[::2] for o in ex.args.override]
    replaced = re.search(r"replace the whole (\w+) section", ex.comment)
    if replaced:
        section = replaced.group(1)
        assert any(k == section and value.startswith("{") for k, value in pairs), ex.line
    deleted = re.search(r"delete (\w+)'s (\w+)", ex.comment)
    if deleted:
        owner, key = deleted.groups()
        nulls = [k for k, value in pairs if yaml.safe_load(value) is None]
        section = next(k.rsplit(".", 1)[0] for k in nulls if k.endswith(f".{key}"))
        assert base[section]["name"] == owner and key in base[section], ex.line
        assert key not in ex.config[section], ex.line


@pytest.mark.parametrize("ex", RUNS, ids=[e.line for e in RUNS])
def test_plugin_options_validate(ex: Example) -> None:
    """Stage 2 too, where the plugins the example config names are installed."""
    for module in ("mtlkit_face", "mtlkit_timm", "mtlkit_dynamic", "mtlkit_weighters"):
        pytest.importorskip(module)
    from mtlkit.config import resolve_run
    from mtlkit.plugins import get_plugin_manager

    resolve_run(load_config(ROOT / ex.args.config, ex.args.override), get_plugin_manager())


def test_every_command_parses_and_names_real_files() -> None:
    assert len(EXAMPLES) == len(LINES) >= 6
    for ex in EXAMPLES:
        if getattr(ex.args, "config", None):
            assert (ROOT / ex.args.config).is_file(), ex.line


def test_yaml_example_is_a_valid_config() -> None:
    (block,) = _blocks(USING_IT, "yaml")
    config = load_config(data=yaml.safe_load(block))
    assert config.weighter.name == "dynamic"
