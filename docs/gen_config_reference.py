"""Generate docs/config-reference.md from the run config's JSON schema and every plugin's options.

    .venv/bin/python docs/gen_config_reference.py          # rewrite docs/config-reference.md
    .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if the committed page is stale

The run config part comes from ``mtlkit.config.RunConfig.model_json_schema()``. The component part
lists, for every name registered by mtlkit itself or by a plugin shipped in this repository
(``plugins/*``), the fields of the component's ``Options`` model (its JSON schema), with the
description taken from ``Field(description=...)`` or, where pydantic has none, from the
attribute docstring under the field in the class source (read with ``ast``).

Components of other installed distributions (the worked example in docs/examples, your own
plugins) are left out, so the page does not depend on what else happens to be installed.
``tests/test_docs_snippets.py`` regenerates the page and compares it with the committed file.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "config-reference.md"
SECTIONS = {  # RunConfig fields whose model gets its own table, in this order
    "trainer": "TrainerConfig",
    "optimizer": "OptimizerConfig",
    "scheduler": "SchedulerConfig",
}


def shipped_distributions() -> list[str]:
    """mtlkit and the distributions under plugins/ (the ones this page documents)."""
    names = ["mtlkit"]
    for pyproject in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        names.append(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"])
    return names


# --- descriptions from attribute docstrings ------------------------------------------------------


@cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for ``field: T = ...`` followed by a string literal in ``cls``."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body.body, [*body.body[1:], None]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def field_doc(model: type, name: str) -> str:
    """The field's description, or its attribute docstring from the first class defining it."""
    info = model.model_fields.get(name)  # type: ignore[attr-defined]
    if info is not None and info.description:
        return info.description
    for cls in model.__mro__:
        if cls is object:
            break
        doc = _attribute_docs(cls).get(name)
        if doc:
            return doc
    return ""


def field_default(model: Any, name: str) -> tuple[bool, Any]:
    """``(True, value)`` for a field with a ``default_factory`` (absent from the JSON schema)."""
    info = getattr(model, "model_fields", {}).get(name)
    if info is None or info.default_factory is None:
        return False, None
    value = info.default_factory()
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_defaults=True)
    return True, value


# --- JSON schema -> table cells ------------------------------------------------------------------


def _md(text: str) -> str:
    """One table cell: reST double backticks to Markdown, one line, pipes escaped."""
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    for i in range(0, len(parts), 2):  # outside code spans: no HTML tags, no emphasis
        parts[i] = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", parts[i])
        parts[i] = re.sub(r"([_*])", r"\\\1", parts[i])
    return "".join(parts).replace("|", "\\|")


def _value(value: Any) -> str:
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return defs[prop["$ref"].rsplit("/", 1)[-1]].get("title", "object")
    if "enum" in prop:
        return "one of " + ", ".join(_value(v) for v in prop["enum"])
    if "const" in prop:
        return _value(prop["const"])
    if "anyOf" in prop:
        return " or ".join(_type(p, defs) for p in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_type(p, defs) for p in prop["prefixItems"]) + "]"
        return "list of " + _type(prop.get("items", {}), defs) if prop.get("items") else "list"
    if kind == "object":
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict):
            return "mapping of str to " + _type(extra, defs)
        return "mapping"
    names = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    return names.get(kind, kind or "any")


def _constraints(prop: dict[str, Any]) -> list[str]:
    out = []
    for key, sym in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in prop:
            out.append(f"{sym} {prop[key]}")
    if "minItems" in prop and "prefixItems" not in prop:
        out.append(f"at least {prop['minItems']} item(s)")
    for sub in prop.get("anyOf", []):
        out += _constraints(sub)
    return out


def _type_cell(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    text = _type(prop, defs)
    cons = _constraints(prop)
    return _md(text + (f" ({', '.join(cons)})" if cons else ""))


def _default_cell(prop: dict[str, Any], required: bool, model: Any, name: str) -> str:
    if "default" in prop:
        return _md(_value(prop["default"]))
    has, value = field_default(model, name)
    if has:
        return "all defaults" if value == {} else _md(_value(value))
    return "**required**" if required else ""


def _rows(
    schema: dict[str, Any],
    defs: dict[str, Any],
    describe: Any,
    prefix: str = "",
    model: Any = None,
    expand: bool = True,
) -> list[str]:
    """Table rows for the properties of ``schema``; nested option models expand as dotted rows."""
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        desc = prop.get("description") or describe(model, name)
        rows.append(
            f"| `{prefix}{name}` | {_type_cell(prop, defs)} | "
            f"{_default_cell(prop, name in required, model, name)} | {_md(desc)} |"
        )
        ref = prop.get("$ref")
        if ref is not None and model is not None and expand:
            sub_schema = defs[ref.rsplit("/", 1)[-1]]
            sub_model = model.model_fields[name].annotation
            rows += _rows(sub_schema, defs, describe, f"{prefix}{name}.", sub_model)
    return rows


TOP_LEVEL = {  # RunConfig declares no description for these
    "output_dir": "the run directory: logs, checkpoints, `results.json`, plots",
    "seed": "seeds the model's initialisation, the data order and the augmentation",
}
HEADER = ["| field | type | default | description |", "|---|---|---|---|"]


def _options_table(options: type) -> list[str]:
    schema = options.model_json_schema()  # type: ignore[attr-defined]
    if not schema.get("properties"):
        return ["No options."]
    defs = schema.get("$defs", {})
    return HEADER + _rows(schema, defs, field_doc, model=options)


# --- the page ------------------------------------------------------------------------------------


def run_config_part() -> list[str]:
    from mtlkit.config import RunConfig, TaskSpec

    schema = RunConfig.model_json_schema()
    defs = schema["$defs"]
    lines = [
        "## Run config",
        "",
        "The top level of a config file (`mtlkit config schema` prints this JSON schema). Unknown "
        "keys are errors. `backbone`, `tasks[]`, `weighter` and `data` name a component with "
        "`name`; every other key of such a mapping is validated by that component's `Options` "
        "model (the [component options](#component-options) below).",
        "",
        *HEADER,
    ]

    def describe(_model: Any, name: str) -> str:
        if name in TOP_LEVEL:
            return TOP_LEVEL[name]
        prop = schema["properties"][name]
        ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
        if ref is not None:
            title = ref.rsplit("/", 1)[-1]
            if name in SECTIONS:
                return f"see [`{name}`](#{name})"
            return defs[title].get("description", "")
        return ""

    lines += _rows(schema, defs, describe, model=RunConfig, expand=False)
    for name, title in SECTIONS.items():
        section = RunConfig.model_fields[name].annotation
        lines += ["", f"### `{name}`", ""]
        lines += HEADER + _rows(defs[title], defs, field_doc, prefix=f"{name}.", model=section)
    spec = defs["TaskSpec"]
    lines += [
        "",
        "### `tasks[]`",
        "",
        _md(spec.get("description", "")),
        "",
        *HEADER,
        *_rows(spec, defs, field_doc, prefix="tasks[].", model=TaskSpec),
    ]
    return lines


def components_part() -> list[str]:
    from mtlkit.options import Options
    from mtlkit.plugins import PluginHost
    from mtlkit.registry import COMPONENT_KINDS

    shipped = shipped_distributions()
    host = PluginHost()
    broken = [f"{i.dist}: {i.error}" for i in host.broken() if i.dist in shipped]
    if broken:
        raise SystemExit("shipped plugins are broken: " + "; ".join(broken))
    seen: set[str] = set()
    lines = [
        "## Component options",
        "",
        "Every component registered by mtlkit and the plugins shipped with it (`plugins/`), by "
        "kind. Run `mtlkit plugins` to see what your installation registers.",
    ]
    for kind in COMPONENT_KINDS:
        registry = host.registry(kind.plural)
        key = kind.config_key + ("[]" if kind.many else "")
        lines += ["", f"### {kind.title}", ""]
        entries = [e for e in registry.entries() if e.dist in shipped]
        for entry in entries:
            seen.add(entry.dist)
            cls = registry.resolve(entry.name)
            options = getattr(cls, "Options", Options)
            lines += [
                f"#### `{entry.name}`",
                "",
                f"`{key}: {{name: {entry.name}}}` from **{entry.dist}**"
                f" (`{entry.target_path}`, options `{options.__module__}.{options.__qualname__}`)"
                + (f": {_md(entry.summary)}." if entry.summary else "."),
                "",
                *_options_table(options),
                "",
            ]
        if lines[-1] == "":
            lines.pop()
    missing = sorted(set(shipped) - seen)
    if missing:
        raise SystemExit(f"not installed (or registering nothing): {', '.join(missing)}")
    return lines


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by docs/gen_config_reference.py: do not edit by hand. -->",
        "",
        "Generated by `python docs/gen_config_reference.py` from the pydantic models: the run "
        "config's JSON schema and the `Options` model of every component that mtlkit and its "
        "shipped plugins register. A test regenerates it and compares, so it follows the code. "
        "How configs are written and overridden: [Getting started](getting-started.md).",
        "",
        *run_config_part(),
        "",
        *components_part(),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
