"""WebDataset tar shards: written from any mtlkit dataset, read back as a streamed dataset.

``mtlkit data shard CONFIG --out DIR`` writes every sample of the config's dataset (all splits)
in a seeded random order to ``DIR/shard-000000.tar``... with the ``webdataset`` package (one
``.png`` for a uint8 image of 1 or 3 channels, else a ``.npy``, plus a ``.json`` of its targets
and metadata), then ``DIR/index.pt`` (each sample's shard, position, split, targets and
metadata as tensors; loads with ``weights_only=True``) and ``DIR/dataset.json`` (the shard list,
the splits' info and summary, and the names behind label indices, such as the people).

Reading: :class:`ShardReader` opens a shard with webdataset's tar iterator and walks it front to
back, keeping one open cursor per shard per process, so a batch of consecutive samples costs one
sequential read; the epoch order keeps each shard whole (``MultiTaskDataset.chunks``) and gives
every rank its own shards. The ``shards`` dataset serves the splits as written; a domain plugin may
re-split them (the face plugin's ``webdataset`` applies its own protocol and fold).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from mtlkit.data import DataModule, DataSplits, StreamedDataset
from mtlkit.errors import DataError
from mtlkit.options import Options

FORMAT = "mtlkit-shards"
INDEX = "index.pt"
DESCRIPTION = "dataset.json"
PATTERN = "shard-%06d.tar"
OPEN_SHARDS = 4
"""Shards a process keeps open (a batch spans at most two; evaluation reads one at a time)."""
EXTRA = "the 'webdataset' package (pip install 'mtlkit[shards]' or 'mtlkit-face[shards]')"


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise DataError(f"WebDataset shards need {EXTRA}") from None
    return webdataset


class SampleDecoder(Protocol):
    """Turns one stored sample (webdataset's dict of bytes by extension) into a stored array."""

    def __call__(self, sample: Mapping[str, Any], name: str) -> np.ndarray: ...


class BadSample(Exception):
    """One unreadable sample; the reader names it (shard and key) and applies its policy."""


def decode_stored(sample: Mapping[str, Any], name: str) -> np.ndarray:
    """The sample as it was stored: a PNG as uint8 ``[C, H, W]``, a ``.npy`` as saved."""
    try:
        if "png" in sample:
            from PIL import Image

            with Image.open(io.BytesIO(sample["png"])) as im:
                arr = np.asarray(im)
            return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        if "npy" in sample:
            return np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    except Exception as exc:  # PIL or NumPy on damaged bytes
        raise BadSample(f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    raise BadSample(f"holds no .png or .npy (it has {sorted(k for k in sample if k[0] != '_')})")


class _Cursor:
    """An open shard, positioned after the last sample it yielded."""

    def __init__(self, path: str) -> None:
        wds = _webdataset()
        self.stream = open(path, "rb")
        self.samples: Iterator[dict[str, Any]] = wds.tariterators.group_by_keys(
            wds.tariterators.tar_file_expander([{"url": path, "stream": self.stream}])
        )
        self.next = 0

    def close(self) -> None:
        self.stream.close()


class ShardReader:
    """Samples of WebDataset shards, addressed by (shard, position in the shard).

    ``policy`` ``error`` raises a ``DataError`` naming the shard and the sample key for a sample
    that cannot be decoded or a shard that cannot be read; ``skip`` leaves it out of its batch
    with the same note.
    """

    def __init__(
        self,
        files: Sequence[str],
        shard: Tensor,
        position: Tensor,
        decode: SampleDecoder = decode_stored,
        policy: str = "error",
        empty_shape: Sequence[int] = (0,),
        dtype: torch.dtype = torch.uint8,
    ) -> None:
        self.files = list(files)
        self.shard = shard
        self.position = position
        self.decode = decode
        self.policy = policy
        self.empty_shape = tuple(empty_shape)
        self.dtype = dtype
        self._cursors: OrderedDict[int, _Cursor] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.shard)

    @property
    def chunks(self) -> Tensor:
        return self.shard

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cursors"] = OrderedDict()
        return state

    def _cursor(self, shard: int, position: int) -> _Cursor:
        if self._pid != os.getpid():  # a forked worker: its parent's open files are not its own
            self._cursors, self._pid = OrderedDict(), os.getpid()
        cursor = self._cursors.get(shard)
        if cursor is None or cursor.next > position:
            if cursor is not None:
                self._cursors.pop(shard).close()
            while len(self._cursors) >= OPEN_SHARDS:  # the least recently read one
                self._cursors.popitem(last=False)[1].close()
            path = self.files[shard]
            try:
                cursor = self._cursors[shard] = _Cursor(path)
            except OSError as exc:
                raise DataError(f"shard {path}: cannot be opened ({exc.strerror or exc})") from None
        self._cursors.move_to_end(shard)
        return cursor

    def _sample(self, shard: int, position: int) -> np.ndarray:
        """Decode the sample at ``position`` of ``shard``, skipping (undecoded) the ones before."""
        cursor = self._cursor(shard, position)
        path = self.files[shard]
        try:
            while True:
                sample = next(cursor.samples)
                cursor.next += 1
                if cursor.next - 1 == position:
                    break
        except StopIteration:
            self._cursors.pop(shard).close()
            raise BadSample(f"{path}: ends before sample {position}") from None
        except Exception as exc:  # tarfile.ReadError, OSError... on a damaged shard
            self._cursors.pop(shard).close()
            raise BadSample(f"{path}: damaged near sample {position} ({exc})") from None
        name = f"{path}: sample {sample.get('__key__', position)!s}"
        try:
            return self.decode(sample, name)
        except BadSample as bad:
            raise BadSample(f"{name}: {bad}") from None

    def __getitem__(self, i: int) -> Tensor:
        try:
            return torch.from_numpy(self._sample(int(self.shard[i]), int(self.position[i])).copy())
        except BadSample as bad:
            raise DataError(str(bad)) from None

    def read(self, index: Sequence[int]) -> tuple[Tensor, list[int], list[str]]:
        # read in stored order (one forward pass per shard), return in the asked order
        where = sorted(range(len(index)), key=lambda p: (int(self.shard[index[p]]),
                                                         int(self.position[index[p]])))
        arrays: dict[int, np.ndarray] = {}
        skipped: list[str] = []
        for p in where:
            i = index[p]
            try:
                arrays[p] = self._sample(int(self.shard[i]), int(self.position[i]))
            except BadSample as bad:
                if self.policy == "error":
                    raise DataError(str(bad)) from None
                skipped.append(str(bad))
        kept = sorted(arrays)
        if not kept:
            return torch.zeros(0, *self.empty_shape[1:], dtype=self.dtype), [], skipped
        return torch.from_numpy(np.stack([arrays[p] for p in kept])), kept, skipped

    def subset(self, index: Tensor) -> ShardReader:
        return ShardReader(
            self.files, self.shard[index], self.position[index], self.decode, self.policy,
            self.empty_shape, self.dtype,
        )


# --- writing -------------------------------------------------------------------------------


def _encode(x: Tensor) -> tuple[str, bytes]:
    """A stored sample as file bytes: PNG for uint8 images of 1 or 3 channels, else .npy."""
    if x.dtype == torch.uint8 and x.dim() == 3 and x.shape[0] in (1, 3):
        from PIL import Image

        arr = x.numpy()
        image = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        return "png", buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, x.numpy(), allow_pickle=False)
    return "npy", buf.getvalue()


def _number(v: Tensor) -> Any:
    value = v.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_shards(
    splits: DataSplits,
    out: str | Path,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Write every split's stored samples to shards of ``shard_size`` in a random order (seeded;
    so each shard mixes people and classes); returns what ``dataset.json`` holds."""
    wds = _webdataset()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    named = splits.named()
    rows = [(name, i) for name, part in named.items() for i in range(len(part))]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    codes = {name: c for c, name in enumerate(named)}
    targets: dict[str, list[Tensor]] = {}
    meta: dict[str, list[Tensor]] = {}
    shard_of: list[int] = []
    position: list[int] = []
    split_of: list[int] = []
    counts: list[int] = []
    stored_like: Tensor | None = None
    with wds.ShardWriter(str(out / PATTERN), maxcount=shard_size, verbose=0) as sink:
        for n, r in enumerate(order):
            name, i = rows[r]
            part = named[name]
            x = part.inputs[i]  # the stored sample (a tensor row, or read from its file)
            stored_like = x if stored_like is None else stored_like
            ext, data = _encode(torch.as_tensor(x))
            labels_of = {
                "split": name,
                "targets": {k: _number(v[i]) for k, v in part.targets.items()},
                "meta": {k: _number(v[i]) for k, v in part.meta.items()},
            }
            sink.write({"__key__": f"{n:09d}", ext: data, "json": json.dumps(labels_of).encode()})
            for k, v in part.targets.items():
                targets.setdefault(k, []).append(v[i])
            for k, v in part.meta.items():
                meta.setdefault(k, []).append(v[i])
            shard_of.append(n // shard_size)
            position.append(n % shard_size)
            split_of.append(codes[name])
            if n % shard_size == 0:
                counts.append(0)
            counts[-1] += 1
    index = {
        "shard": torch.tensor(shard_of, dtype=torch.long),
        "position": torch.tensor(position, dtype=torch.long),
        "split": torch.tensor(split_of, dtype=torch.long),
        "targets": {k: torch.stack(v) for k, v in targets.items()},
        "meta": {k: torch.stack(v) for k, v in meta.items()},
    }
    torch.save(index, out / INDEX)
    assert stored_like is not None
    description = {
        "format": FORMAT,
        "version": 1,
        "shards": [{"file": PATTERN % k, "count": c} for k, c in enumerate(counts)],
        "splits": list(named),
        "count": len(rows),
        "stored": {"shape": list(stored_like.shape), "dtype": str(stored_like.dtype)},
        "info": splits.info,
        "summary": splits.summary,
        "group_key": splits.group_key,
        "group_source": splits.group_source,
        "labels": {k: list(v) for k, v in (labels or {}).items()},
        "seed": seed,
    }
    (out / DESCRIPTION).write_text(json.dumps(description, indent=1, default=str))
    return description


# --- reading -------------------------------------------------------------------------------


def read_description(root: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``dataset.json`` and ``index.pt`` of a shard folder, checked."""
    root = Path(root).expanduser()
    path = root / DESCRIPTION
    if not path.is_file():
        raise DataError(f"{root}: no {DESCRIPTION}; write shards with 'mtlkit data shard'")
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if description.get("format") != FORMAT:
        raise DataError(f"{path}: not an mtlkit shard description (format {FORMAT!r})")
    try:
        index = torch.load(root / INDEX, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{root / INDEX}: cannot be read ({exc})") from None
    _webdataset()  # fail here, naming the extra, rather than in a worker
    return description, index


def reader_for(
    root: str | Path,
    description: Mapping[str, Any],
    index: Mapping[str, Any],
    decode: SampleDecoder = decode_stored,
    policy: str = "error",
    empty_shape: Sequence[int] | None = None,
) -> ShardReader:
    """A reader over every sample of a shard folder, in index order."""
    files = [str(Path(root).expanduser() / s["file"]) for s in description["shards"]]
    stored = description["stored"]
    dtype = getattr(torch, str(stored["dtype"]).removeprefix("torch."))
    shape = list(empty_shape) if empty_shape is not None else [0, *stored["shape"]]
    return ShardReader(files, index["shard"], index["position"], decode, policy, shape, dtype)


class ShardsOptions(Options):
    root: str
    """The folder 'mtlkit data shard' wrote (dataset.json, index.pt, shard-*.tar)."""
    on_bad_image: Literal["error", "skip"] = "error"
    """``error`` or ``skip``: what an undecodable sample or damaged shard does."""


class ShardsData(DataModule):
    """The splits of a shard folder as they were written, streamed (no re-splitting)."""

    Options = ShardsOptions
    options: ShardsOptions

    def setup(self, tasks: Sequence[str], data_config: Mapping[str, Any]) -> DataSplits:
        o = self.options
        description, index = read_description(o.root)
        missing = [t for t in tasks if t not in index["targets"]]
        if missing:
            raise DataError(f"shards: {o.root} holds no target(s) {missing}")
        full = StreamedDataset(
            reader=reader_for(o.root, description, index, policy=o.on_bad_image),
            targets={t: index["targets"][t] for t in dict.fromkeys(tasks)},
            meta=dict(index["meta"]),
        )
        rows = {
            name: torch.nonzero(index["split"] == code).flatten()
            for code, name in enumerate(description["splits"])
        }
        parts = {name: full.subset(r) for name, r in rows.items() if len(r)}
        info = description.get("info", {})
        return DataSplits(
            train=parts["train"],
            val=parts.get("val"),
            test=parts.get("test"),
            info={t: info.get(t, {}) for t in tasks},
            summary={**description.get("summary", {}), "storage": "stream", "shards": str(o.root)},
            group_key=(key := description.get("group_key")),
            # the people behind the group indices, when the writer could name them
            group_names=(description.get("labels") or {}).get(key) if key else None,
            group_source=str(description.get("group_source") or f"shards:{o.root}"),
        )


def shard_config(
    config: Any, out: str | Path, *, shard_size: int, seed: int = 0
) -> dict[str, Any]:
    """Set up the config's dataset as a run would (its tasks' targets, its backbone's layout)
    and write it to shards; a dataset that can name its label indices (``label_names()``,
    e.g. the people behind subject indices) has them kept in ``dataset.json``."""
    from mtlkit.config import resolve_run
    from mtlkit.plugins import get_plugin_manager

    resolved = resolve_run(config, get_plugin_manager())
    backbone = resolved.backbone.cls(resolved.backbone.options)
    module = resolved.data.cls(resolved.data.options)
    splits = module.setup([t.target_key for t in config.tasks], backbone.data_config())
    names = getattr(module, "label_names", None)
    labels = names() if callable(names) else None
    return write_shards(splits, out, shard_size=shard_size, seed=seed, labels=labels)
