"""Config: two-stage validation with field paths, overrides, YAML and TOML."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from mtlkit.config import RunConfig, apply_overrides, load_config, resolve_run
from mtlkit.errors import ConfigError
from mtlkit.plugins import PluginHost

from .conftest import tiny_config


def test_yaml_and_toml_load_the_same(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    toml = f'''output_dir = "{cfg["output_dir"]}"
seed = 3
[trainer]
epochs = 2
batch_size = 16
progress = "off"
plot = false
[optimizer]
name = "adamw"
lr = 0.01
[backbone]
name = "mlp"
in_features = 16
hidden = [32]
[[tasks]]
name = "classification"
id = "a"
[[tasks]]
name = "classification"
id = "b"
[weighter]
name = "equal"
[data]
name = "synthetic"
num_samples = 160
num_features = 16
'''
    (tmp_path / "c.toml").write_text(toml)
    assert load_config(tmp_path / "c.yaml") == load_config(tmp_path / "c.toml")


def test_overrides_parse_yaml_scalars(tmp_path: Path) -> None:
    cfg = load_config(
        data=tiny_config(tmp_path),
        overrides=[
            "trainer.epochs=5",
            "output_dir=runs/x",
            "trainer.grad_clip=1.5",
            "tasks.1.id=c",
            "backbone.hidden=[8, 8]",
            "weighter.name=static",
            "weighter.weights={a: 1, c: 0}",
        ],
    )
    assert cfg.trainer.epochs == 5 and cfg.output_dir == "runs/x"
    assert cfg.trainer.grad_clip == 1.5
    assert cfg.task_ids() == ["a", "c"]
    assert cfg.backbone.options() == {"in_features": 16, "hidden": [8, 8]}
    assert cfg.weighter.options() == {"weights": {"a": 1, "c": 0}}


@pytest.mark.bad_input("override")
def test_null_override_deletes_the_key(tmp_path: Path, host: PluginHost) -> None:
    base = tiny_config(tmp_path, weighter={"name": "static", "weights": {"a": 1, "b": 2}})
    base["trainer"]["max_steps"] = 5
    switched = ["weighter.name=equal", "weighter.weights=~"]
    cfg = load_config(data=base, overrides=[*switched, "trainer.max_steps=null", "tasks.1.id=~"])
    assert cfg.weighter.name == "equal" and cfg.weighter.options() == {}
    assert cfg.trainer.max_steps is None  # deleted: the default, the same as null
    assert cfg.tasks[1].id is None and cfg.task_ids() == ["a", "classification"]
    resolve_run(load_config(data=base, overrides=switched), host)
    with pytest.raises(ConfigError, match="weights: unknown field"):
        resolve_run(load_config(data=base, overrides=["weighter.name=equal"]), host)


def test_null_override_of_an_absent_key_is_a_no_op(tmp_path: Path) -> None:
    base = tiny_config(tmp_path)
    out = apply_overrides(tiny_config(tmp_path), ["trainer.grad_clip=~", "scheduler.name=~"])
    assert out == base
    assert load_config(data=base, overrides=["weighter=~"]).weighter.name == "equal"


@pytest.mark.bad_input("override")
def test_mapping_override_replaces_the_section(tmp_path: Path) -> None:
    base = tiny_config(tmp_path, weighter={"name": "static", "weights": {"a": 1, "b": 2}})
    cfg = load_config(data=base, overrides=["weighter={name: equal}"])
    assert cfg.weighter.name == "equal" and cfg.weighter.options() == {}
    cfg = load_config(data=base, overrides=["weighter={name: static, weights: null}"])
    assert cfg.weighter.options() == {"weights": None}  # null inside a mapping is kept


def _nullable_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    """(path, default) of every field that accepts None, through nested config models."""
    found = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found += _nullable_fields(ann, f"{prefix}{name}.")
        elif get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann):
            found.append((f"{prefix}{name}", field.get_default(call_default_factory=True)))
    return found


def test_deleting_a_nullable_core_field_equals_setting_it_null() -> None:
    """``-o x=~`` deletes instead of setting null; for core fields both mean the default None."""
    fields = _nullable_fields(RunConfig)
    assert "trainer.max_steps" in dict(fields)
    assert {path: default for path, default in fields if default is not None} == {}


@pytest.mark.parametrize(
    "override, message",
    [
        ("noequals", "not of the form"),
        ("tasks.7.id=x", "not an index"),
        ("seed.x=1", "not a mapping"),
        ("seed.x=~", "not a mapping"),
        ("tasks.0=~", "not a list item"),
        ("tasks.0.id.x=~", "tasks.0.id is not a mapping"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(tiny_config(tmp_path), [override])


@pytest.mark.parametrize(
    "override, path",
    [
        ("trainer.epochs=-1", "trainer.epochs"),
        ("trainer.typo=1", "trainer.typo: unknown field"),
        ("optimizer.name=lion", "optimizer.name"),
        ("trainer.batch_size=many", "trainer.batch_size"),
        ("tasks.1.id=a", "task ids must be unique"),
        ("trainer.select=best", "select_metric"),
    ],
)
def test_stage1_errors_name_the_path(tmp_path: Path, override: str, path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        load_config(data=tiny_config(tmp_path), overrides=[override])


def test_missing_sections_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(data={"tasks": []})
    msg = str(err.value)
    assert "backbone: Field required" in msg and "data: Field required" in msg
    assert "tasks: List should have at least 1 item" in msg


def test_stage2_errors_name_plugin_and_path(tmp_path: Path, host: PluginHost) -> None:
    cfg = load_config(
        data=tiny_config(tmp_path),
        overrides=[
            "backbone.hidden=oops",
            "data.bogus=1",
            "weighter.name=equl",
            "tasks.0.label_smoothing=-x",
        ],
    )
    with pytest.raises(ConfigError) as err:
        resolve_run(cfg, host)
    msg = str(err.value)
    assert "backbone.hidden" in msg and "(backbone 'mlp' from mtlkit)" in msg
    assert "data.bogus: unknown field (dataset 'synthetic' from mtlkit)" in msg
    assert "weighter.name: unknown weighter 'equl'" in msg and "did you mean 'equal'" in msg
    assert "tasks.0.label_smoothing" in msg


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_unsafe_yaml_tags_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("output_dir: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(evil)


def test_schema_is_json_schema() -> None:
    schema = RunConfig.model_json_schema()
    assert {"backbone", "tasks", "weighter", "data", "trainer"} <= set(schema["properties"])


def test_fields_added_later_are_left_out_at_their_default(tmp_path) -> None:
    """A config from before ``trainer.batched_backward`` (or ``trainer.loader``, or
    ``architecture``) existed hashes the same: each is dropped from the config dict while at its
    default, and kept once set."""
    from mtlkit.config import config_to_dict, load_config
    from mtlkit.sweep import config_hash

    from .conftest import tiny_config

    plain = config_to_dict(load_config(data=tiny_config(tmp_path)))
    assert "batched_backward" not in plain["trainer"] and "loader" not in plain["trainer"]
    assert "architecture" not in plain
    on = config_to_dict(load_config(data=tiny_config(tmp_path, trainer__batched_backward=True)))
    assert on["trainer"]["batched_backward"] is True
    assert config_hash(on) != config_hash(plain)


def test_stored_options_are_reread_as_what_they_mean_now(tmp_path: Path, host: PluginHost) -> None:
    """An option an upgrade now spells out (``true`` -> the settings it stands for) compares
    as equal when an old record holds the short form, while a spelled-out value that differs
    from today's default still shows, as do components under another name."""
    import dataclasses

    from pydantic import Field, field_validator

    from mtlkit.config import Resolved, reread_resolved, resolved_config_dict
    from mtlkit.sweep import default_changes

    config = load_config(data=tiny_config(tmp_path))
    run = resolve_run(config, host)
    base = type(run.data.options)

    class Spelled(base):  # type: ignore[misc, valid-type]
        mode: bool | dict[str, int] = Field(True, validate_default=True)

        @field_validator("mode")
        @classmethod
        def _spell(cls, v: bool | dict[str, int]) -> bool | dict[str, int]:
            return {"level": 1} if v is True else v

    run = dataclasses.replace(run, data=Resolved(run.data.cls, Spelled(), run.data.entry_dist))
    now = resolved_config_dict(config, run)
    assert now["data"]["mode"] == {"level": 1}

    def stored(**data: object) -> dict:
        out = yaml.safe_load(yaml.safe_dump(now))
        out["data"].update(data)
        return out

    short = stored(mode=True)  # written before the upgrade spelled it out
    assert default_changes(short, now) == []  # different shapes: nothing compared ...
    assert reread_resolved(short, config, run) == now  # ... and read again, the same
    older = reread_resolved(stored(mode={"level": 2}), config, run)
    assert default_changes(older, now) == ["data.mode.level: 2 -> 1"]
    renamed = stored(name="other", mode=True)  # another component: left as it was
    assert reread_resolved(renamed, config, run)["data"]["mode"] is True
    rejected = stored(mode=True, dropped_option=1)  # this version refuses it: left as it was
    assert reread_resolved(rejected, config, run)["data"] == rejected["data"]
