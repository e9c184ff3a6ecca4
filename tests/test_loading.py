"""The batch plan, the loader defaults and WebDataset shards (core synthetic data)."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mtlkit.cli import main
from mtlkit.config import LoaderConfig, load_config
from mtlkit.data import InMemoryDataset, epoch_order
from mtlkit.errors import DataError
from mtlkit.loading import EpochPlan, resolve_loader
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

from .conftest import tiny_config


def _data(n: int, chunks: torch.Tensor | None = None) -> Any:
    ds = InMemoryDataset(inputs=torch.zeros(n, 2), targets={"a": torch.zeros(n)})
    if chunks is None:
        return ds

    class Chunked:
        """A dataset whose samples live in chunks (shards)."""

        def __len__(self) -> int:
            return n

        streamed = True

    out = Chunked()
    out.chunks = chunks  # type: ignore[attr-defined]
    return out


def test_plan_is_the_distributed_sampler_order_sliced_into_batches() -> None:
    plan = EpochPlan(_data(70), batch_size=16, seed=3)
    assert plan.num_batches == 5  # 4 full batches and a trailing batch of 6
    for epoch in (0, 1):
        order = epoch_order(70, 3, epoch)
        keys = plan.keys(epoch)
        assert [k.batch for k in keys] == [0, 1, 2, 3, 4]
        assert torch.equal(torch.cat([k.index for k in keys]), order)
    resumed = plan.keys(1, start=3)
    assert [k.batch for k in resumed] == [3, 4]
    assert torch.equal(resumed[0].index, plan.keys(1)[3].index)
    assert len(plan.keys(1, start=1, limit=2)) == 2


def test_ranks_read_disjoint_shares() -> None:
    plans = [EpochPlan(_data(70), 8, seed=0, rank=r, world_size=2) for r in range(2)]
    a, b = (torch.cat([k.index for k in p.keys(0)]) for p in plans)
    assert plans[0].per_rank == plans[1].per_rank == 35
    assert not set(a.tolist()) & set(b.tolist())


def test_chunked_order_keeps_shards_whole_and_gives_each_rank_its_own() -> None:
    chunks = torch.arange(10).repeat_interleave(torch.tensor([7, 7, 7, 7, 7, 7, 7, 7, 7, 4]))
    seen: list[set[int]] = []
    for rank in range(2):
        plan = EpochPlan(_data(len(chunks), chunks), 7, seed=1, rank=rank, world_size=2)
        assert plan.per_rank == 32  # rank 1 holds the short shard: both stop at its 32
        order0, order1 = plan.order(0), plan.order(1)
        assert len(order0) == 32
        shards = chunks[order0]
        # shard by shard, each read front to back
        changes = int((shards[1:] != shards[:-1]).sum())
        assert changes == len(torch.unique(shards)) - 1
        assert set(chunks[order1].tolist()) <= set(chunks[chunks % 2 == rank].tolist())
        seen.append(set(chunks[order0].tolist()))
    assert not seen[0] & seen[1]
    assert not torch.equal(
        EpochPlan(_data(len(chunks), chunks), 7, 1).order(0),
        EpochPlan(_data(len(chunks), chunks), 7, 1).order(1),
    )


def test_loader_defaults() -> None:
    cpu = torch.device("cpu")
    memory = resolve_loader(LoaderConfig(), _data(8), cpu)
    assert memory.num_workers == 0 and not memory.pin_memory and not memory.persistent_workers
    streamed = resolve_loader(LoaderConfig(), _data(8, torch.zeros(8, dtype=torch.long)), cpu)
    assert 1 <= streamed.num_workers <= 4 and streamed.persistent_workers
    assert resolve_loader(LoaderConfig(num_workers=3), _data(8), cpu).num_workers == 3


def test_default_loader_section_is_left_out_of_config_dicts() -> None:
    from mtlkit.config import config_to_dict

    plain = config_to_dict(load_config(data=tiny_config(Path("x"))))
    assert "loader" not in plain["trainer"]
    cfg = tiny_config(Path("x"))
    cfg["trainer"]["loader"] = {"num_workers": 2}
    assert config_to_dict(load_config(data=cfg))["trainer"]["loader"]["num_workers"] == 2


def _write_shards(tmp_path: Path, size: int = 40) -> Path:
    path = tmp_path / "source.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "src")))
    out = tmp_path / "shards"
    assert main(["data", "shard", str(path), "--out", str(out), "--shard-size", str(size)]) == 0
    return out


def _shards_config(tmp_path: Path, out: Path, **data: Any) -> dict:
    cfg = tiny_config(tmp_path / "run", data={"name": "shards", "root": str(out), **data})
    cfg["trainer"]["loader"] = {"num_workers": 2}
    return cfg


def test_shards_hold_the_splits_as_written(tmp_path: Path, host: PluginHost) -> None:
    out = _write_shards(tmp_path)
    assert len(list(out.glob("shard-*.tar"))) == 4  # 160 samples, 40 per shard
    source = Trainer(load_config(data=tiny_config(tmp_path / "src")), host)
    shards = Trainer(load_config(data=_shards_config(tmp_path, out)), host)
    assert shards.loader_settings.num_workers == 2
    for name, part in source.data.named().items():
        other = shards.data.named()[name]
        assert len(part) == len(other)
        stored = {tuple(x.tolist()) for x in part.inputs}
        assert {tuple(other.inputs[i].tolist()) for i in range(len(other))} == stored
    results = shards.fit()
    assert results["steps"] == shards.state.step > 0


@pytest.mark.bad_input("bad image file")
def test_damaged_shard_is_an_error_naming_it_or_skipped(tmp_path: Path, host: PluginHost) -> None:
    out = _write_shards(tmp_path)
    shard = out / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"shard-000002\.tar: .*sample"):
        Trainer(load_config(data=_shards_config(tmp_path, out)), host).fit()
    cfg = _shards_config(tmp_path, out, on_bad_image="skip")
    with pytest.warns(UserWarning, match="shard-000002.tar"):
        results = Trainer(load_config(data=cfg), host).fit()
    assert results["data"]["skipped_images"] > 0


@pytest.mark.bad_input("plugin option")
def test_missing_webdataset_names_the_extra(
    tmp_path: Path, host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _write_shards(tmp_path)
    real = builtins.__import__

    def no_webdataset(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "webdataset":
            raise ImportError("No module named 'webdataset'")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "webdataset", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_webdataset)
    with pytest.raises(DataError, match=r"pip install 'mtlkit\[shards\]'"):
        Trainer(load_config(data=_shards_config(tmp_path, out)), host)


def test_a_reader_keeps_few_shards_open(tmp_path: Path, host: PluginHost) -> None:
    from mtlkit.shards import OPEN_SHARDS, read_description, reader_for

    out = _write_shards(tmp_path, size=10)
    description, index = read_description(out)
    reader = reader_for(out, description, index)
    assert len(description["shards"]) == 16
    x, kept, skipped = reader.read(list(range(len(reader))))
    assert len(kept) == 160 and not skipped and x.shape == (160, 16)
    assert len(reader._cursors) <= OPEN_SHARDS
    again = reader.read([150, 3])[0]  # backwards: reopened, same samples
    assert torch.equal(again, x[[150, 3]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_loaded_batches_are_pinned_on_cuda() -> None:
    from mtlkit.loading import BatchLoader, LoaderSettings, eval_keys

    ds = InMemoryDataset(inputs=torch.zeros(8, 2), targets={"a": torch.zeros(8)})
    loader = BatchLoader(ds, LoaderSettings(1, True, False, None))
    batch = next(loader.batches(eval_keys(8, 4)))
    assert batch["input"].is_pinned() and batch["targets"]["a"].is_pinned()


class _DiesOnSample(InMemoryDataset):
    """Kills the process reading sample ``fatal`` (a worker killed by the OOM killer, a segfault
    in an image decoder): nothing Python can catch inside the worker."""

    fatal = 5

    def load(self, index: torch.Tensor, generator: torch.Generator | None = None) -> Any:
        import os

        if self.fatal in index.tolist():
            os._exit(9)
        return super().load(index, generator)


@pytest.mark.bad_input("data")
def test_a_worker_that_dies_is_a_named_error_not_a_hang() -> None:
    from mtlkit.loading import BatchLoader, LoaderSettings, eval_keys

    data = _DiesOnSample(inputs=torch.zeros(16, 2), targets={"a": torch.zeros(16)})
    loader = BatchLoader(data, LoaderSettings(1, False, False, None))
    read = []
    with pytest.raises(DataError, match="a data-loading worker process died"):
        for batch in loader.batches(eval_keys(len(data), 4)):
            read.append(batch)
    assert len(read) <= 1  # at most the batch before the fatal sample, never one after it
