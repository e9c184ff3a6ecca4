"""The architecture component: the default hps keeps old configs as they were, the engine reads
what is shared, the representation and the last shared layer from the architecture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mtlkit import hookimpl
from mtlkit.architecture import Architecture, HeadSpec, pack, unpack
from mtlkit.config import config_to_dict, load_config, resolve_run, resolved_config_dict
from mtlkit.errors import ConfigError
from mtlkit.options import Options
from mtlkit.plugins import PluginHost
from mtlkit.sweep import config_hash
from mtlkit.trainer import Trainer
from mtlkit.weighter import Needs, Update, Weighter, WeighterInput

from .conftest import tiny_config


class TwoTowerOptions(Options):
    own: int = 8
    """Width of each task's private layer."""


class TwoTower(Architecture):
    """A test architecture: the backbone is shared, each task adds a private layer, and the
    cut holds two parts (the features and their square) so packing is exercised."""

    Options = TwoTowerOptions
    options: TwoTowerOptions

    def __init__(self, backbone: nn.Module, heads: Mapping[str, HeadSpec],
                 options: TwoTowerOptions | None = None) -> None:
        super().__init__(backbone, heads, options)
        self.backbone = backbone
        d = backbone.feature_dim
        self.private = nn.ModuleDict(
            {n: nn.Sequential(nn.Linear(2 * d, self.options.own), nn.ReLU()) for n in heads}
        )
        self.build_heads(heads, self.options.own)

    def trunk(self, x: Tensor) -> list[Tensor]:
        f = self.backbone(x)
        return [f, f.square()[:, None, :]]

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        joined = torch.cat([parts[0], parts[1][:, 0]], dim=1)
        return {n: self.heads[n](self.private[n](joined)) for n in self.task_names}

    def task_modules(self, name: str) -> list[nn.Module]:
        return [self.heads[name], self.private[name]]


class _Plugin:
    @hookimpl
    def register_architectures(self, registry: Any) -> None:
        registry.add("two_tower", TwoTower, summary="test architecture")


@pytest.fixture
def arch_host(host: PluginHost) -> PluginHost:
    host.pm.register(_Plugin(), name="two-tower-test")
    return host


def test_default_architecture_leaves_configs_and_hashes_unchanged(tmp_path: Path,
                                                                  host: PluginHost) -> None:
    plain = load_config(data=tiny_config(tmp_path))
    named = load_config(data=tiny_config(tmp_path, architecture={"name": "hps"}))
    assert plain.architecture.name == "hps"
    assert "architecture" not in config_to_dict(plain)
    assert config_to_dict(plain) == config_to_dict(named)
    assert config_hash(config_to_dict(plain)) == config_hash(config_to_dict(named))
    assert "architecture" not in resolved_config_dict(plain, resolve_run(plain, host))


def test_other_architecture_is_kept_with_its_options(tmp_path: Path,
                                                     arch_host: PluginHost) -> None:
    cfg = load_config(data=tiny_config(tmp_path, architecture={"name": "two_tower"}))
    assert config_to_dict(cfg)["architecture"] == {"name": "two_tower"}
    resolved = resolved_config_dict(cfg, resolve_run(cfg, arch_host))
    assert resolved["architecture"] == {"name": "two_tower", "own": 8}


def test_unknown_architecture_names_the_registered_ones(tmp_path: Path,
                                                        host: PluginHost) -> None:
    cfg = load_config(data=tiny_config(tmp_path, architecture={"name": "hsp"}))
    with pytest.raises(ConfigError, match=r"architecture\.name: unknown architecture 'hsp';"
                       r" available: hps; did you mean 'hps'\?"):
        resolve_run(cfg, host)


def test_bad_architecture_option_names_the_field(tmp_path: Path, arch_host: PluginHost) -> None:
    cfg = load_config(data=tiny_config(tmp_path, architecture={"name": "two_tower", "own": "x"}))
    with pytest.raises(ConfigError, match=r"architecture\.own: .*\(architecture 'two_tower'"):
        resolve_run(cfg, arch_host)


def test_pack_unpack_round_trip() -> None:
    parts = [torch.randn(3, 4), torch.randn(3, 2, 5, 5)]
    z = pack(parts)
    assert z.shape == (3, 4 + 50)
    back = unpack(z, [p.shape[1:] for p in parts])
    assert all(torch.equal(a, b) for a, b in zip(parts, back))
    single = torch.randn(3, 2, 4)
    assert pack([single]).data_ptr() == single.data_ptr()  # one part: a view, no copy
    with pytest.raises(ValueError, match="does not match"):
        unpack(z, [torch.Size([4])])


class SumWeighter(Weighter):
    """Equal weights on the gradient path its options name: the same update on every path."""

    def __init__(self, task_names: Sequence[str], grads: str) -> None:
        super().__init__(task_names)
        self.needs = Needs(grads=grads)  # type: ignore[arg-type]

    def combine(self, inp: WeighterInput) -> Update:
        w = self.record(torch.ones(self.num_tasks))
        if self.needs.grads in ("none", "last_layer"):
            return Update(weights=w, loss=inp.losses.sum())
        return Update(weights=w, grad=inp.grads.sum(0))


@pytest.mark.parametrize("grads", ["none", "last_layer", "representation", "parameters"])
def test_engine_reads_the_architecture(tmp_path: Path, arch_host: PluginHost, grads: str) -> None:
    """Each gradient path trains a two-part cut to the plain summed-loss gradient; the [T, D]
    buffer covers only the shared backbone."""
    from mtlkit.gradients import GradientEngine

    trainer = Trainer(load_config(data=tiny_config(tmp_path, architecture={"name": "two_tower"})),
                      arch_host)
    model = trainer.model
    assert isinstance(model, TwoTower)
    assert {id(p) for p in model.shared_parameters()} == {
        id(p) for p in model.backbone.parameters()}
    assert model.representation_dim(torch.zeros(1, 16)) == 2 * model.backbone.feature_dim
    assert model.last_shared_parameters() == list(model.backbone.net[-2].parameters())
    engine = GradientEngine(model, trainer.tasks, SumWeighter(trainer.task_ids, grads))
    batch = trainer.data.train.batch(torch.arange(16))
    model.zero_grad(set_to_none=True)
    engine.backward(batch)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    _, outputs = model(batch["input"])
    sum(engine.task_losses(outputs, batch)).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-6), n


def test_trainer_fits_with_another_architecture(tmp_path: Path, arch_host: PluginHost) -> None:
    cfg = load_config(data=tiny_config(tmp_path, architecture={"name": "two_tower", "own": 4}))
    results = Trainer(cfg, arch_host).fit()
    assert results["config"]["architecture"] == {"name": "two_tower", "own": 4}
    assert set(results["metrics"]["test"]) == {"a", "b"}


class Leaky(TwoTower):
    """Broken on purpose: a task's branch runs a shared layer after the cut."""

    def branches(self, parts: Sequence[Tensor]) -> dict[str, Any]:
        out = super().branches(parts)
        leak = self.backbone.net[1].bias.sum()
        return {n: o + leak for n, o in out.items()}


def test_the_kit_catches_a_shared_layer_after_the_cut() -> None:
    from mtlkit.builtin.mlp import MLPBackbone, MLPOptions
    from mtlkit.testing import check_architecture

    def make(cls: type[TwoTower]) -> TwoTower:
        torch.manual_seed(0)
        return cls(MLPBackbone(MLPOptions(hidden=[8])),
                   {n: (lambda w: nn.Linear(w, 2)) for n in ("a", "b")})

    x = torch.randn(4, 16)
    check_architecture(lambda: make(TwoTower), x)
    with pytest.raises(AssertionError) as err:
        check_architecture(lambda: make(Leaky), x)
    text = str(err.value)
    assert "cut: task 'a''s output, computed from a detached representation, reaches" in text
    assert "path-representation: path 'representation': gradient of backbone.net.1.bias" in text
    assert "path-parameters" not in text  # the parameter path does not rely on the cut
