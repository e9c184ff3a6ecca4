"""``mtlkit.cellpack``: finished cell folders packed into one JSON-lines file, losslessly, merged
into what is there, sorted, idempotent; a damaged file is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlkit.cellpack import folder_record, full_results, pack, pack_path, read_pack
from mtlkit.errors import ConfigError


def _cell(root: Path, name: str, acc: float) -> Path:
    """A finished cell folder as the trainer and the sweep leave it."""
    run = root / name
    run.mkdir(parents=True)
    epochs = [{"epoch": 0, "step": 3, "train": {"weight/a": 0.5}, "seconds": 0.1},
              {"epoch": 1, "step": 6, "train": {"weight/a": 0.25}, "seconds": 0.2}]
    results = {"metrics": {"test": {"a": {"accuracy": acc}}}, "history": epochs,
               "config": {"seed": 0}, "timing": {"epoch_seconds": 0.3}}
    (run / "results.json").write_text(json.dumps(results, indent=2))
    (run / "epochs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    (run / "cell.json").write_text(json.dumps({"name": name, "label": "equal"}))
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "test_a_confusion.csv").write_text("x,y\n1,2\n")
    (run / "train.log").write_text("a log, never packed\n")
    (run / "last.pt").write_bytes(b"\0")
    return run


def test_pack_is_lossless_sorted_and_merges_idempotently(tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    # an awkward float: its JSON text must give back the same bits
    _cell(sw, "b_fold0-0000000002", 0.1 + 0.2)
    _cell(sw, "a_fold0-0000000001", 1 / 3)
    (sw / "unfinished-0000000003").mkdir()  # no results.json: not packed
    assert pack(sw) == {"added": ["a_fold0-0000000001", "b_fold0-0000000002"], "replaced": [],
                        "unchanged": [], "kept": []}
    target = pack_path(sw)
    assert target == tmp_path / "sw.jsonl"
    lines = target.read_text().splitlines()
    assert [json.loads(ln)["name"] for ln in lines] == ["a_fold0-0000000001", "b_fold0-0000000002"]
    records = read_pack(target)
    b = records["b_fold0-0000000002"]
    assert "history" not in b["results"]  # the same rows as epochs: kept once
    assert full_results(b) == json.loads((sw / b["name"] / "results.json").read_text())
    assert b["results"]["metrics"]["test"]["a"]["accuracy"] == 0.1 + 0.2
    assert b["files"] == {"test_a_confusion.csv": "x,y\n1,2\n"}  # no log, no checkpoint
    assert b["cell"] == {"name": b["name"], "label": "equal"} and b["hash"] == "0000000002"
    # a rerun of the cell compares equal to its line
    assert folder_record(sw / b["name"]) == b

    before = target.read_bytes()
    assert pack(sw)["unchanged"] == ["a_fold0-0000000001", "b_fold0-0000000002"]
    assert target.read_bytes() == before  # idempotent

    # a new folder elsewhere: existing lines are kept, the new one is merged in its place
    other = tmp_path / "copy" / "sw"
    _cell(other, "c_fold0-0000000004", 0.5)
    _cell(other, "b_fold0-0000000002", 0.75)  # rerun: the folder is newer, its line replaced
    target.rename(pack_path(other))
    done = pack(other)
    assert done["added"] == ["c_fold0-0000000004"] and done["replaced"] == ["b_fold0-0000000002"]
    assert done["kept"] == ["a_fold0-0000000001"]
    merged = read_pack(pack_path(other))
    assert list(merged) == ["a_fold0-0000000001", "b_fold0-0000000002", "c_fold0-0000000004"]
    assert merged["b_fold0-0000000002"]["results"]["metrics"]["test"]["a"]["accuracy"] == 0.75


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"name": "a", "results": {', "not a JSON line"),
        ('["a"]', "not a packed cell"),
        ('{"name": "a"}', "not a packed cell"),
        ('{"name": "x-1", "results": {}}', "packed twice"),
    ],
)
def test_a_damaged_packed_file_is_an_error_naming_its_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "sw.jsonl"
    path.write_text('{"name": "x-1", "results": {}}\n' + line + "\n")
    with pytest.raises(ConfigError, match=f"sw.jsonl:2: .*{message}"):
        read_pack(path)
