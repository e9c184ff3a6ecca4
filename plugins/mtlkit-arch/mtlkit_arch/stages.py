"""A backbone as a sequence of named feature stages, which every architecture here cuts up.

A backbone gives its stages either itself, with a ``feature_stages()`` method returning
``[(name, module), ...]`` whose composition yields each stage's output, or as a timm model
(``backbone.model`` with ``feature_info``): the stages are then timm's own ``features_only``
split (``FeatureListNet``) of that very model, so pretrained weights carry over. A stage's name is
timm's ``feature_info`` module name (``act1``, ``layer1``...``layer4`` for a ResNet).

After the last stage the architectures pool globally (a mean over every position): layers a timm
model runs after its last feature stage (MobileNetV3's ``conv_head``) are not used.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mtlkit.errors import ConfigError
from mtlkit.options import Options

StageRef = str | int
"""A stage by name (``layer3``) or index (``3``; negative counts from the last)."""

Init = Literal["copy", "reset"]


class SplitOptions(Options):
    """Where the shared part ends."""

    split_at: StageRef = 0
    """The last shared stage, by name (``layer3``) or index (negative from the end); every later
    stage belongs to the per-task (or per-expert) copies."""


class ExpertOptions(SplitOptions):
    """Options of the mixture-of-experts architectures."""

    expert_init: Init = "reset"
    """``reset``: each expert starts from PyTorch's default initialisation of its layers, so
    experts differ from the first step; ``copy``: each starts from the backbone's weights
    (pretrained ones included), and only the gates tell the experts apart."""
    gate_temperature: float = Field(1.0, gt=0)
    """Softmax temperature of the gates (1: the papers' plain softmax)."""


@dataclass
class Stages:
    """The named stages of a backbone and what each one outputs for its probe input."""

    names: list[str]
    modules: list[nn.Module]
    shapes: list[torch.Size]
    """Per-sample output shape of each stage for the backbone's ``data_config`` input size."""

    def index(self, ref: StageRef, option: str = "split_at") -> int:
        """The index of stage ``ref``; an unknown one is a ConfigError listing the valid names."""
        n = len(self.names)
        if isinstance(ref, bool):
            ref = int(ref)
        if isinstance(ref, int):
            if -n <= ref < n:
                return ref % n
        elif ref in self.names:
            return self.names.index(ref)
        raise ConfigError(
            f"{option}: {ref!r} is not a stage of this backbone; its stages are"
            f" {', '.join(self.names)} (or an index from {-n} to {n - 1})"
        )

    def channels(self, i: int) -> int:
        return int(self.shapes[i][0])

    def segment(self, start: int, stop: int) -> nn.Sequential:
        """Stages ``start`` to ``stop - 1`` as one module (the stage modules themselves)."""
        return nn.Sequential(*self.modules[start:stop])


def feature_stages(backbone: nn.Module) -> Stages:
    """The backbone's stages, probed once with one input of its ``data_config`` size."""
    own = getattr(backbone, "feature_stages", None)
    if callable(own):
        pairs = list(own())
    else:
        pairs = _timm_stages(backbone)
    if not pairs:
        raise ConfigError("the backbone has no feature stages")
    names = [n for n, _ in pairs]
    modules = [m for _, m in pairs]
    return Stages(names, modules, _probe(backbone, modules))


def _timm_stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    model = getattr(backbone, "model", backbone)
    info = getattr(model, "feature_info", None)
    if not info:
        raise ConfigError(
            f"backbone {type(backbone).__name__} exposes no feature stages: use a timm model"
            " (backbone 'timm'), or give the backbone a feature_stages() method"
        )
    from timm.models._features import FeatureListNet

    n = len(info)
    net = None
    for flatten in (False, True):
        try:
            net = FeatureListNet(model, out_indices=tuple(range(n)), flatten_sequential=flatten)
            break
        except (AssertionError, KeyError, ValueError):
            continue
    if net is None:
        raise ConfigError(
            f"timm model {type(model).__name__} does not split into sequential feature stages"
            " (models with features_only via hooks or forward_intermediates only, such as ViTs,"
            " are not supported)"
        )
    names = [str(d["module"]) for d in info]
    stages: list[tuple[str, nn.Module]] = []
    current: list[nn.Module] = []
    for child, module in net.named_children():
        current.append(module)
        if child in net.return_layers:
            stages.append((names[int(net.return_layers[child])], nn.Sequential(*current)))
            current = []
    return stages


@torch.no_grad()
def _probe(backbone: nn.Module, modules: Sequence[nn.Module]) -> list[torch.Size]:
    config = backbone.data_config() if hasattr(backbone, "data_config") else {}
    size = config.get("input_size")
    if not size:
        raise ConfigError("the backbone's data_config() gives no input_size to probe its stages")
    param = next(backbone.parameters(), None)
    x = torch.zeros(1, *size, device=param.device if param is not None else None)
    shapes = []
    was = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
            x = m(x)
            if not isinstance(x, Tensor) or x.ndim not in (2, 4):
                raise ConfigError(
                    f"stage {len(shapes)} returns {type(x).__name__}"
                    f"{tuple(x.shape) if isinstance(x, Tensor) else ''}: the stages must give"
                    " [B, C, H, W] (or [B, C]) tensors"
                )
            shapes.append(x.shape[1:])
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"the backbone's feature stages cannot run one after another: {type(exc).__name__}:"
            f" {exc} (models whose features need hooks or forward_intermediates, such as ViTs,"
            " are not supported)"
        ) from None
    finally:
        for m, w in zip(modules, was):
            m.train(w)
    return shapes


def pool(x: Tensor) -> Tensor:
    """Global average over every position: ``[B, C, ...] -> [B, C]``."""
    return x.flatten(2).mean(-1) if x.ndim > 2 else x


def clone(module: nn.Module, init: Init) -> nn.Module:
    """A deep copy of ``module``: as it is (``copy``) or with every layer re-initialised."""
    out = copy.deepcopy(module)
    if init == "reset":
        for m in out.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return out


def gate(logits: Tensor, temperature: float) -> Tensor:
    """Softmax mixing weights ``[B, K]`` (computed in float32 under autocast)."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def mix(weights: Tensor, experts: Tensor) -> Tensor:
    """``sum_k weights[:, k] * experts[:, k]`` for experts ``[B, K, ...]``."""
    w = weights.to(experts.dtype).reshape(*weights.shape, *([1] * (experts.ndim - 2)))
    return (w * experts).sum(1)
