"""Checkpoints: what a wrong file is called, no unsafe advice, and state-dict mismatch summaries."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlkit.checkpoint import (
    describe_mismatch,
    load_checkpoint,
    parse_load_error,
    parse_size_mismatches,
    save_checkpoint,
    stored_config,
)
from mtlkit.config import config_to_dict, load_config
from mtlkit.errors import CheckpointError

from .conftest import tiny_config

# fragments of torch's own advice, which must never reach a user through mtlkit
TORCH_ADVICE = ("weights_only", "add_safe_globals", "trusted source", "miniz", "pytorch.org")


class _Evil:
    def __reduce__(self):  # executed by an unsafe unpickler
        return (print, ("pwned",))


def _load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert not [a for a in TORCH_ADVICE if a in msg], msg
    return msg


@pytest.mark.bad_input("checkpoint")
def test_folder_names_its_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_checkpoint({"x": torch.ones(1)}, run / "last.pt")
    save_checkpoint({"x": torch.ones(1)}, run / "best.pt")
    (run / "results.json").write_text("{}")
    msg = _load_error(run)
    assert "is a folder" in msg and "best.pt, last.pt" in msg and "results.json" not in msg
    (tmp_path / "empty").mkdir()
    assert "is a folder, not a file; it holds no *.pt files" in _load_error(tmp_path / "empty")


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("results.json", b'{\n  "metrics": {}\n}\n', "it looks like JSON"),
        ("list.json", b"  [1, 2]", "it looks like JSON"),
        ("notes.txt", b"step 1 loss 0.3\n", "it looks like text"),
        ("empty.pt", b"", "the file is empty"),
        ("raw.pt", pickle.dumps(_Evil()), "plain Python pickle"),
        ("noise.bin", bytes(range(256)), "unrecognised binary"),
    ],
)
@pytest.mark.bad_input("checkpoint")
def test_non_checkpoint_named_before_loading(
    tmp_path: Path, name: str, content: bytes, fragment: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    msg = _load_error(path)
    assert msg.startswith(f"{path} is not a checkpoint (") and fragment in msg


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.bad_input("checkpoint")
def test_pickled_objects_refused_without_unsafe_advice(tmp_path: Path, zipped: bool) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "m": _Evil()}, path, _use_new_zipfile_serialization=zipped)
    msg = _load_error(path)
    assert msg.startswith(f"refusing to load {path}: it holds objects other than tensors")
    assert "(a pickled print)" in msg and "never unpickles" in msg


def test_legacy_format_of_plain_tensors_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(
        {"format_version": 1, "x": torch.ones(2)}, path, _use_new_zipfile_serialization=False
    )
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))


@pytest.mark.bad_input("checkpoint")
def test_truncated_checkpoint_gives_a_short_reason(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    save_checkpoint({"x": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])
    msg = _load_error(path)
    assert msg.startswith(f"cannot read checkpoint {path}") and "\n" not in msg


def test_no_unsafe_advice_in_mtlkit_sources() -> None:
    """No mtlkit message may suggest weights_only=False, whatever torch's exceptions say."""
    src = Path(__file__).resolve().parents[1] / "mtlkit"
    hits = [
        f"{p.name}: {line.strip()}"
        for p in src.rglob("*.py")
        for line in p.read_text().splitlines()
        if re.search(r"weights_only\W{0,3}(=|set to)\W{0,3}False", line)
    ]
    assert hits == []


# --- state-dict mismatches -------------------------------------------------------------------


def _error(model: nn.Module, state: dict[str, torch.Tensor]) -> RuntimeError:
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(state)
    return err.value


def test_parse_load_error_agrees_with_a_non_strict_load() -> None:
    saved = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)).state_dict()
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    parsed = parse_load_error(_error(model, saved))
    report = model.load_state_dict(saved, strict=False)
    assert parsed == (list(report.missing_keys), list(report.unexpected_keys))
    assert parsed == (["2.weight", "2.bias"], ["1.weight", "1.bias"])


def test_parse_load_error_one_sided_and_size_only() -> None:
    wide = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    assert parse_load_error(_error(nn.Sequential(nn.Linear(3, 2)), wide.state_dict())) == (
        [],
        ["1.weight", "1.bias"],
    )
    assert parse_load_error(_error(wide, nn.Sequential(nn.Linear(3, 2)).state_dict())) == (
        ["1.weight", "1.bias"],
        [],
    )
    exc = _error(nn.Linear(3, 4), nn.Linear(3, 2).state_dict())
    assert parse_load_error(exc) == ([], [])
    assert parse_size_mismatches(exc) == [
        "weight (checkpoint [2, 3], model [4, 3])",
        "bias (checkpoint [2], model [4])",
    ]


def test_parse_load_error_ignores_other_errors() -> None:
    assert parse_load_error(RuntimeError("CUDA out of memory")) is None
    assert parse_size_mismatches(RuntimeError("CUDA out of memory")) == []


def test_describe_mismatch_counts_and_first_three() -> None:
    saved = nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)]).state_dict()
    exc = _error(nn.Sequential(nn.Identity(), *[nn.Linear(2, 2) for _ in range(3)]), saved)
    parsed = parse_load_error(exc)
    assert parsed is not None
    msg = describe_mismatch(*parsed, None, None)
    assert msg.splitlines() == [
        "checkpoint does not fit this model:",
        "  2 missing keys (in the model, not the checkpoint): 3.weight, 3.bias",
        "  2 unexpected keys (in the checkpoint, not the model): 0.weight, 0.bias",
        "  likely cause unknown: there is no stored config to compare with",
    ]
    many = describe_mismatch([f"k{i}" for i in range(5)], ["u"], {}, {})
    assert "5 missing keys (in the model, not the checkpoint): k0, k1, k2 ... and 2 more" in many
    assert "1 unexpected key (in the checkpoint, not the model): u" in many
    assert "backbone, weighter and tasks are the same" in many


def test_describe_mismatch_names_the_changed_sections() -> None:
    stored = {
        "backbone": {"name": "timm", "model_name": "resnet18", "in_chans": 1},
        "weighter": {"name": "dynamic", "lr": 0.1},
        "tasks": [{"name": "face_identity", "id": None}, {"name": "expression", "id": None}],
    }
    current = {
        "backbone": {"name": "timm", "model_name": "resnet50", "in_chans": 1},
        "weighter": {"name": "equal"},
        "tasks": [{"name": "face_identity", "id": None}],
    }
    lines = describe_mismatch(["a"], [], stored, current).splitlines()
    assert lines[2:] == [
        "  likely cause: the checkpoint was trained with backbone"
        " {name: timm, model_name: resnet18} but the config has {name: timm, model_name: resnet50}",
        "  and with weighter {name: dynamic, lr: 0.1}"
        " but the config has {name: equal, lr: (unset)}",
        "  and with tasks [face_identity, expression] but the config has [face_identity]",
    ]
    current["tasks"] = [
        {"name": "face_identity", "id": None, "center_loss_weight": 0.5},
        {"name": "expression", "id": None},
    ]
    msg = describe_mismatch(["a"], [], {**stored, "weighter": current["weighter"]}, current)
    assert msg.splitlines()[-1] == (
        "  and with task 'face_identity' {name: face_identity, center_loss_weight: (unset)}"
        " but the config has {name: face_identity, center_loss_weight: 0.5}"
    )


@pytest.mark.bad_input("checkpoint")
def test_mismatch_between_two_real_runs(tmp_path: Path, host) -> None:
    """A checkpoint of one run loaded into the model another config builds."""
    from mtlkit.trainer import Trainer

    old = Trainer(load_config(data=tiny_config(tmp_path / "old")))
    new_config = load_config(data=tiny_config(tmp_path / "new"), overrides=["backbone.hidden=[8]"])
    new = Trainer(new_config)
    save_checkpoint(old.state_dict(), tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")
    exc = _error(new.model, state["model"])
    parsed = parse_load_error(exc)
    assert parsed == ([], [])  # same keys, other shapes
    sizes = parse_size_mismatches(exc)
    assert len(sizes) > 3 and sizes[0].endswith("(checkpoint [32, 16], model [8, 16])")
    assert stored_config(state) == config_to_dict(old.config)
    msg = describe_mismatch(*parsed, stored_config(state), config_to_dict(new_config), sizes)
    assert f"  {len(sizes)} size mismatches: " in msg and " ... and " in msg
    assert msg.splitlines()[-1] == (
        "  likely cause: the checkpoint was trained with backbone"
        " {name: mlp, hidden: [32]} but the config has {name: mlp, hidden: [8]}"
    )


def test_stored_config_tolerates_odd_values() -> None:
    assert stored_config({"config": json.dumps({"seed": 1})}) == {"seed": 1}
    assert stored_config({"config": {"seed": 1}}) == {"seed": 1}
    assert stored_config({"config": "not json"}) is None
    assert stored_config({"config": "[1]"}) is None
    assert stored_config({}) is None
