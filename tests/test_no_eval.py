"""No code path turns a user's file or string into code: an AST scan of the shipped sources.

Scanned: every ``.py`` under ``mtlkit/`` and ``plugins/*/`` except tests. Refused:
- the builtins ``eval``, ``exec`` and ``compile`` (``torch.compile``, ``re.compile`` are fine);
- ``pickle.load``/``loads``/``Unpickler`` (or those names imported from ``pickle``);
- ``yaml.load``/``load_all`` without a ``SafeLoader``, and ``yaml.unsafe_load``/``full_load``;
- ``torch.load`` without ``weights_only=True``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_PARTS = {"tests", ".venv", "build", "__pycache__"}

CODE_BUILTINS = {"eval", "exec", "compile"}
PICKLE_LOADS = {"load", "loads", "Unpickler"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def sources() -> list[Path]:
    roots = [REPO / "mtlkit", *sorted((REPO / "plugins").glob("*/"))]
    files = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = set(path.relative_to(REPO).parts)
            if parts & SKIP_PARTS or any(p.endswith(".egg-info") for p in parts):
                continue
            files.append(path)
    return files


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ``""``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def findings(source: str, filename: str = "<string>") -> Iterator[str]:
    """Each unsafe call in ``source`` as ``file:line: what``."""
    tree = ast.parse(source, filename)
    # names bound by ``from pickle import load`` / ``import pickle as p`` / ``import yaml as y``
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
        where = f"{filename}:{node.lineno}"
        if full in CODE_BUILTINS or full in {f"builtins.{b}" for b in CODE_BUILTINS}:
            yield f"{where}: call to the builtin {full.split('.')[-1]}()"
        elif full in {f"pickle.{f}" for f in PICKLE_LOADS} | {"dill.load", "dill.loads"}:
            yield f"{where}: {full}() runs arbitrary code from its input"
        elif full in {f"yaml.{f}" for f in UNSAFE_YAML}:
            yield f"{where}: {full}() can build arbitrary Python objects"
        elif full in {"yaml.load", "yaml.load_all"}:
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if _dotted(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                yield f"{where}: {full}() without Loader=yaml.SafeLoader"
        elif full == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            yield f"{where}: torch.load() without weights_only=True"


def test_sources_found() -> None:
    files = {p.relative_to(REPO).as_posix() for p in sources()}
    assert "mtlkit/checkpoint.py" in files and "mtlkit/config.py" in files
    assert "plugins/mtlkit-face/mtlkit_face/data/manifest.py" in files
    assert not any("/tests/" in f or f.startswith("tests/") for f in files)


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_code_from_data(path: Path) -> None:
    found = list(findings(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix()))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "eval(s)",
        "exec(s)",
        "compile(s, 'f', 'exec')",
        "import builtins\nbuiltins.eval(s)",
        "import pickle\npickle.load(f)",
        "import pickle as p\np.loads(b)",
        "from pickle import loads\nloads(b)",
        "import pickle\npickle.Unpickler(f).load()",
        "import yaml\nyaml.load(s)",
        "import yaml\nyaml.load(s, Loader=yaml.FullLoader)",
        "import yaml\nyaml.load(s, yaml.UnsafeLoader)",
        "import yaml\nyaml.unsafe_load(s)",
        "import yaml\nyaml.full_load(s)",
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "import torch\ntorch.load(p, weights_only=flag)",
        "from torch import load\nload(p)",
    ],
)
def test_scanner_flags(snippet: str) -> None:
    assert list(findings(snippet)), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.compile(model)",
        "import re\nre.compile('x')",
        "model.eval()",
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import yaml\nyaml.safe_load(s)",
        "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.load(s, yaml.CSafeLoader)",
        "import pickle\nraise pickle.UnpicklingError('x')",
        "import pickle\npickle.dumps(x)",
        "import tomllib\ntomllib.loads(s)",
    ],
)
def test_scanner_allows(snippet: str) -> None:
    assert not list(findings(snippet)), snippet
