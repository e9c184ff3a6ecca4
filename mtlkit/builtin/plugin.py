"""The core's own plugin module: light, it only names where each built-in class lives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from mtlkit.registry import Registry


@hookimpl
def register_tasks(registry: Registry) -> None:
    registry.add(
        "classification",
        "mtlkit.builtin.classification:ClassificationTask",
        summary="softmax cross-entropy classification",
    )


@hookimpl
def register_backbones(registry: Registry) -> None:
    registry.add("mlp", "mtlkit.builtin.mlp:MLPBackbone", summary="small MLP over flattened input")


@hookimpl
def register_weighters(registry: Registry) -> None:
    registry.add("equal", "mtlkit.builtin.weighters:EqualWeighter", summary="w_i = 1")
    registry.add(
        "static",
        "mtlkit.builtin.weighters:StaticWeighter",
        summary="fixed user weights; one-hot = single-task",
    )


@hookimpl
def register_datasets(registry: Registry) -> None:
    registry.add(
        "synthetic",
        "mtlkit.builtin.synthetic:SyntheticData",
        summary="Gaussian clusters with one label factor per task",
    )
    registry.add(
        "shards",
        "mtlkit.shards:ShardsData",
        summary="WebDataset shards written by 'mtlkit data shard', splits as written",
    )


@hookimpl
def register_architectures(registry: Registry) -> None:
    registry.add("hps", "mtlkit.builtin.hps:MultiTaskModel",
                 summary="hard parameter sharing: one backbone, one head per task (the default)")
