"""dlib's pretrained face-recognition ResNet as mtlkit's shared backbone (``dlib_face``).

The weights come from the installed ``face_recognition_models`` package (or a local copy of the
same ``.dat`` file), read by our own parser: no download, no dlib at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from mtlkit.backbone import Backbone
from mtlkit.errors import ConfigError
from mtlkit.options import Options
from mtlkit_dlibnet.network import INPUT_SIZE, MIN_INPUT_SIZE, STAGE_NAMES, DlibFaceResNet
from mtlkit_dlibnet.serialization import DlibFormatError
from mtlkit_dlibnet.weights import WeightsNotFoundError, load_state_dict, locate_weights

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
"""What dlib's ``input_rgb_image_sized`` subtracts from 0-255 pixels before dividing by 256."""

FREEZE_CHOICES = ("none", *STAGE_NAMES, "fc", "all")


class DlibInput(nn.Module):
    """dlib's input scaling on images already in [0, 1]: ``(255 x - mean) / 256`` per RGB
    channel. A one-channel (grayscale) input is first repeated to R = G = B, as dlib converts a
    gray image to RGB."""

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        mean = torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean / 255.0, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"dlib_face backbone built for {self.in_chans} input channel(s) got {x.shape[1]}"
            )
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"dlib_face backbone needs images of at least {MIN_INPUT_SIZE} px a side (dlib"
                f" uses 150); got {tuple(x.shape[-2:])}: set data.image_size or leave it unset"
            )
        if self.in_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) * (255.0 / 256.0)


class DlibFaceOptions(Options):
    """Options of the ``dlib_face`` backbone."""

    pretrained: bool = True
    """Load dlib's face-recognition weights; false builds the same network untrained."""
    weights_file: str | None = None
    """A ``dlib_face_recognition_resnet_model_v1.dat``; default: the one inside the installed
    ``face_recognition_models`` package."""
    in_chans: Literal[1, 3] = 3
    """3: RGB images; 1: grayscale images, repeated to R = G = B inside the backbone."""
    embedding: bool = True
    """Keep dlib's 128-d ``fc`` (features are the face descriptor); false: the 256-d pooled
    features before it."""
    feature_scale: float = Field(1.0, gt=0)
    """Multiplies the features. dlib's descriptor has a norm near 1, so each of its 128 values is
    about 0.1 and freshly initialised heads learn slowly on it; 10 brings them near 1. Cosine
    verification is unchanged by it."""
    freeze: str = "none"
    """Parameters that never train: ``none``, ``all`` (the whole trunk: a linear probe), or a
    stage name (``stem``, ``level4``, ``level3``, ``level2``, ``level1``, ``level0``, ``fc``):
    that stage and every one before it."""

    @field_validator("freeze")
    @classmethod
    def _known_stage(cls, value: str) -> str:
        if value not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}; got {value!r}")
        return value

    def frozen_stages(self) -> tuple[str, ...]:
        """Names of the modules whose parameters are frozen (``fc`` included where it exists)."""
        order = (*STAGE_NAMES, "fc")
        if self.freeze == "none":
            return ()
        if self.freeze == "all":
            return order
        return order[: order.index(self.freeze) + 1]


def _weights(options: DlibFaceOptions) -> dict[str, Tensor]:
    try:
        path = Path(options.weights_file).expanduser() if options.weights_file else locate_weights()
    except WeightsNotFoundError as exc:
        raise ConfigError(f"backbone dlib_face: {exc}") from None
    if not path.is_file():
        raise ConfigError(f"backbone dlib_face: weights_file {str(path)!r} is not a file")
    try:
        state, _ = load_state_dict(path)
    except DlibFormatError as exc:
        raise ConfigError(
            f"backbone dlib_face: {path} is not dlib's face-recognition ResNet: {exc}"
        ) from None
    return state


class DlibFaceBackbone(Backbone):
    """dlib's face-recognition ResNet: [0, 1] images at 150 px in, the 128-d descriptor out."""

    Options = DlibFaceOptions
    options: DlibFaceOptions

    def __init__(self, options: DlibFaceOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        if o.freeze == "fc" and not o.embedding:
            raise ConfigError("backbone dlib_face: freeze: fc needs embedding: true (no fc kept)")
        self.input = DlibInput(o.in_chans)
        self.net = DlibFaceResNet(embedding=True)
        if o.pretrained:
            self.net.load_state_dict(_weights(o), strict=True)
        if not o.embedding:
            self.net.fc = None
        for name in o.frozen_stages():
            module = getattr(self.net, name, None)
            if module is not None:
                module.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return 128 if self.net.fc is not None else self.net.pooled_dim

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(self.input(x))
        return out * self.options.feature_scale if self.options.feature_scale != 1.0 else out

    def data_config(self) -> dict[str, Any]:
        """150 px (dlib's chip size; any size runs), images in [0, 1]: the backbone applies
        dlib's own mean and 1/256 scaling itself, so ``mean`` 0 and ``std`` 1 here."""
        c = self.options.in_chans
        return {
            "in_chans": c,
            "input_size": (c, INPUT_SIZE, INPUT_SIZE),
            "mean": (0.0,) * c,
            "std": (1.0,) * c,
            "interpolation": "bilinear",
            "fixed_input_size": True,
        }

    def feature_stages(self) -> list[tuple[str, nn.Module]]:
        """The stem (with the input scaling) and the five residual levels, for architectures
        that split the trunk; they pool the last stage themselves, so ``fc`` is not used."""
        stages = self.net.stages()
        first = nn.Sequential(self.input, stages[0][1])
        return [(stages[0][0], first), *stages[1:]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The fc (or the last convolution when the fc is dropped)."""
        if self.net.fc is not None:
            return [self.net.fc.weight]
        return list(self.net.level0[-1].conv2.parameters())
