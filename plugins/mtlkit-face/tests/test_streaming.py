"""Streamed face data: read from disk in DataLoader workers, and still the same run.

The in-memory path and the streamed path share one mechanism (``mtlkit.loading``): a batch is a
pure function of its indices and its (seed, epoch, batch) generator, so a streamed run with two
workers trains on exactly the batches of an in-memory run, and resumes bit-identically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mtlkit_face.data.files import write_synthetic_faces
from mtlkit_face.data.manifest import ManifestData

from mtlkit import load_config
from mtlkit.data import InMemoryDataset, StreamedDataset, batch_generator
from mtlkit.errors import DataError
from mtlkit.trainer import Trainer

from .conftest import face_config


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """84 drawn faces (6 people x 7 expressions x 2 frames) at 32 px as PNG plus a manifest."""
    return write_synthetic_faces(
        tmp_path_factory.mktemp("faces"), size=32, num_identities=6, frames_per_sequence=2
    )


def manifest_config(out: Path, manifest: Path, workers: int | None, **data: Any) -> dict:
    cfg = face_config(out)
    cfg["data"] = {
        "name": "manifest",
        "manifest": str(manifest),
        "num_folds": 3,
        "val_fraction": 0.25,
        **data,
    }
    cfg["trainer"].update(epochs=2, batch_size=16, num_threads=1)
    if workers is not None:
        cfg["trainer"]["loader"] = {"num_workers": workers}
    return cfg


def _params(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_streamed_batches_equal_in_memory_batches(faces: Path) -> None:
    def splits(storage: str) -> Any:
        data = ManifestData(ManifestData.Options(manifest=str(faces), storage=storage, num_folds=3))
        return data.setup(["face_identity", "expression"], {"in_chans": 1})

    memory, stream = splits("memory"), splits("stream")
    assert isinstance(memory.train, InMemoryDataset) and isinstance(stream.train, StreamedDataset)
    assert stream.summary["storage"] == "stream" and memory.summary["storage"] == "memory"
    assert {k: v for k, v in memory.summary.items() if k != "storage"} == {
        k: v for k, v in stream.summary.items() if k != "storage"
    }
    for name, part in memory.named().items():
        other = stream.named()[name]
        for key in part.meta:
            assert torch.equal(part.meta[key], other.meta[key])
        index = torch.tensor([5, 0, 3, 1])
        gen_a, gen_b = batch_generator(0, 1, 2), batch_generator(0, 1, 2)
        a = part.load(index, gen_a).batch
        b = other.load(index, gen_b).batch
        assert torch.equal(a["input"], b["input"])
        for key in a["targets"]:
            assert torch.equal(a["targets"][key], b["targets"][key])
        assert torch.equal(part.inputs[2], other.inputs[2])


def test_auto_storage_streams_what_does_not_fit(faces: Path) -> None:
    data = ManifestData(ManifestData.Options(manifest=str(faces), memory_limit_mb=0, num_folds=3))
    splits = data.setup(["expression"], {"in_chans": 1})
    assert splits.train.streamed and splits.summary["storage"] == "stream"
    assert not ManifestData(ManifestData.Options(manifest=str(faces), num_folds=3)).setup(
        ["expression"], {"in_chans": 1}
    ).train.streamed


def test_generated_faces_cannot_stream() -> None:
    from mtlkit_face.data.synthetic import SyntheticFacesData

    data = SyntheticFacesData(SyntheticFacesData.Options(storage="stream", num_identities=4))
    with pytest.raises(DataError, match="storage 'stream' reads image files"):
        data.setup(["expression"], {"in_chans": 1})


def test_streamed_run_with_two_workers_equals_in_memory_run_and_resumes_exactly(
    tmp_path: Path, faces: Path
) -> None:
    """In memory (no workers), streamed with 2 workers, and streamed with 2 workers stopped
    mid-epoch then resumed: the same final weights, bit for bit (CPU, deterministic)."""
    memory = Trainer(load_config(data=manifest_config(tmp_path / "m", faces, None,
                                                      storage="memory")))
    memory.fit()
    assert memory.loader_settings.num_workers == 0
    stream_cfg = manifest_config(tmp_path / "s", faces, 2, storage="stream")
    stream = Trainer(load_config(data=stream_cfg))
    stream.fit()
    assert stream.loader_settings.num_workers == 2
    assert stream.steps_per_epoch >= 3
    for a, b in zip(_params(memory), _params(stream)):
        assert torch.equal(a, b)

    part_cfg = manifest_config(tmp_path / "p", faces, 2, storage="stream")
    part = Trainer(load_config(data=part_cfg))
    part.config.trainer.max_steps = stream.steps_per_epoch + 1  # stop inside epoch 2
    part.fit()
    assert part.state.batch == 1
    # the worker count is harmless on resume: resuming with one worker replays the same batches
    part_cfg["trainer"]["loader"] = {"num_workers": 1, "prefetch_factor": 3}
    resumed = Trainer(load_config(data=part_cfg))
    resumed.fit(resume=True, allow_config_change=True)
    assert resumed.loader_settings.num_workers == 1
    assert resumed.state.step == stream.state.step
    for a, b in zip(_params(stream), _params(resumed)):
        assert torch.equal(a, b)


def _break(faces: Path) -> str:
    """Truncate one image the training split holds; returns its manifest path cell."""
    rel = "img/ID01/ID01_happy_0.png"
    target = faces.parent / rel
    target.write_bytes(target.read_bytes()[:40])
    return rel


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    manifest = write_synthetic_faces(tmp_path / "faces", size=32, num_identities=6,
                                     frames_per_sequence=2)
    _break(manifest)
    return manifest


@pytest.mark.bad_input("bad image file")
def test_bad_file_in_a_worker_is_an_error_naming_it(tmp_path: Path, broken: Path) -> None:
    cfg = manifest_config(tmp_path / "run", broken, 2, storage="stream")
    trainer = Trainer(load_config(data=cfg))
    with pytest.raises(DataError) as err:
        trainer.fit()
    message = str(err.value)
    assert "ID01_happy_0.png" in message and "faces.csv line" in message
    assert "truncated" in message and "Traceback" not in message


@pytest.mark.bad_input("bad image file, skipped by policy")
def test_bad_file_in_a_worker_is_skipped_and_counted(tmp_path: Path, broken: Path) -> None:
    cfg = manifest_config(tmp_path / "run", broken, 2, storage="stream", on_bad_image="skip")
    with pytest.warns(UserWarning, match="ID01_happy_0.png"):
        results = Trainer(load_config(data=cfg)).fit()
    assert results["data"]["skipped_images"] == 1
    assert "ID01_happy_0.png" in results["data"]["skipped_files"][0]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["data"]["skipped_images"] == 1


def _shard(tmp_path: Path, faces: Path, size: int = 20) -> Path:
    import yaml

    from mtlkit.cli import main

    cfg = manifest_config(tmp_path / "unused", faces, None)
    path = tmp_path / "source.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "shards"
    assert main(["data", "shard", str(path), "--out", str(out), "--shard-size", str(size)]) == 0
    return out


def test_shards_split_like_their_source_and_train_the_same(tmp_path: Path, faces: Path) -> None:
    """Shards written from the manifest re-split by the face protocol to the same people and
    the same pixels: decoded into memory they train bit-identically to the manifest run."""
    out = _shard(tmp_path, faces)
    assert len(list(out.glob("shard-*.tar"))) == 5  # 84 samples, 20 per shard
    source = Trainer(load_config(data=manifest_config(tmp_path / "m", faces, None,
                                                      storage="memory")))
    cfg = manifest_config(tmp_path / "w", faces, None, storage="memory")
    cfg["data"] = {**cfg["data"], "name": "webdataset", "root": str(out)}
    del cfg["data"]["manifest"]
    shards = Trainer(load_config(data=cfg))
    for name, part in source.data.named().items():
        for key in ("subject", "sequence", "expression"):
            assert torch.equal(part.meta[key], shards.data.named()[name].meta[key])
    source.fit()
    shards.fit()
    for a, b in zip(_params(source), _params(shards)):
        assert torch.equal(a, b)


def test_streamed_shards_resume_exactly_with_two_workers(tmp_path: Path, faces: Path) -> None:
    out = _shard(tmp_path, faces)

    def cfg(name: str) -> dict:
        c = manifest_config(tmp_path / name, faces, 2, storage="stream")
        c["data"] = {**c["data"], "name": "webdataset", "root": str(out)}
        del c["data"]["manifest"]
        return c

    full = Trainer(load_config(data=cfg("full")))
    assert full.data.train.chunks is not None
    full.fit()
    part = Trainer(load_config(data=cfg("part")))
    part.config.trainer.max_steps = full.steps_per_epoch + 1
    part.fit()
    resumed = Trainer(load_config(data=cfg("part")))
    resumed.fit(resume=True, allow_config_change=True)
    assert resumed.state.step == full.state.step
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)


def test_image_folder_by_subject_streams(tmp_path: Path, faces: Path) -> None:
    from mtlkit_face.data.folder import ImageFolderData

    def setup(storage: str, tasks: list[str]) -> Any:
        data = ImageFolderData(ImageFolderData.Options(
            root=str(faces.parent / "img"), folders="subject", storage=storage, num_folds=3,
        ))
        return data.setup(tasks, {"in_chans": 1})

    with pytest.raises(DataError, match="no target"):
        setup("stream", ["expression"])
    memory, stream = setup("memory", ["face_identity"]), setup("stream", ["face_identity"])
    assert stream.train.streamed and stream.summary["total"]["subjects"] == 6
    assert stream.summary["total"]["sequences"] == 84  # an image directly under a person
    index = torch.arange(len(memory.train))
    assert torch.equal(memory.train.batch(index)["input"], stream.train.batch(index)["input"])
    # subject-disjoint exactly as in memory: nobody in test trains
    train_people = set(stream.train.meta["subject"].tolist())
    assert stream.test is not None
    assert not train_people & set(stream.test.meta["subject"].tolist())


def test_image_folder_by_expression(tmp_path: Path, faces: Path) -> None:
    from mtlkit_face.data.folder import ImageFolderData

    root = tmp_path / "by_expression"
    for png in (faces.parent / "img").rglob("*.png"):
        expression = png.stem.split("_")[1]
        (root / expression).mkdir(parents=True, exist_ok=True)
        (root / expression / png.name).write_bytes(png.read_bytes())
    data = ImageFolderData(ImageFolderData.Options(root=str(root), folders="expression"))
    splits = data.setup(["expression"], {"in_chans": 1})
    assert splits.info["expression"]["num_classes"] == 7
    assert splits.summary["total"]["images"] == splits.summary["total"]["subjects"] == 84


@pytest.mark.slow
@pytest.mark.parametrize("source", ["manifest", "webdataset"])
def test_two_ranks_stream_with_workers_and_resume_exactly(
    tmp_path: Path, faces: Path, source: str
) -> None:
    """`mtlkit train --nproc 2` (gloo) on streamed data, one worker per rank: each rank reads its
    share (its samples, or its shards); stopped mid-epoch and resumed, it ends where an
    uninterrupted run ends, bit for bit."""
    import os
    import subprocess
    import sys

    import yaml

    from mtlkit.checkpoint import load_checkpoint

    root = _shard(tmp_path, faces, size=10) if source == "webdataset" else None

    def train(name: str, *extra: str) -> None:
        cfg = manifest_config(tmp_path / name, faces, 1, storage="stream")
        cfg["trainer"].update(batch_size=8, checkpoint_every=3)
        if root is not None:
            cfg["data"] = {**cfg["data"], "name": "webdataset", "root": str(root)}
            del cfg["data"]["manifest"]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "mtlkit", "train", str(path), "--nproc", "2", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]

    train("full")
    train("part", "-o", "trainer.max_steps=3")
    train("part", "--resume", "--allow-config-change")
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    resumed = load_checkpoint(tmp_path / "part" / "last.pt")
    assert int(full["train_state"]["step"]) == int(resumed["train_state"]["step"]) > 3
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
