"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a torch module.

The network of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 stem, 29 convolutions in
residual blocks over four widths (32, 64, 128, 256), global average pooling and a 128-d
``fc_no_bias``. Its batch norms were folded into per-channel ``affine`` layers when the model
was published, so they stay fixed here too. Two dlib conventions are kept exactly, because the
pretrained weights depend on them: a stride-2 convolution or pool has no padding, and a residual
sum of tensors of unequal size pads the smaller one with zeros at the end (channels, bottom,
right), as dlib's ``add_prev`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 150
"""dlib aligns face chips to 150x150 RGB (``get_face_chip``, padding 0.25)."""
MIN_INPUT_SIZE = 103
"""The smallest side the unpadded strided layers leave a 3x3 window for at the last level."""
EMBEDDING_DIM = 128
STEM_WIDTH = 32


@dataclass(frozen=True)
class StageSpec:
    """One level of the network: ``blocks`` residual blocks of ``width`` channels; the first
    one halves the resolution when ``down`` is set."""

    name: str
    width: int
    blocks: int
    down: bool


STAGES: tuple[StageSpec, ...] = (
    StageSpec("level4", 32, 3, down=False),
    StageSpec("level3", 64, 4, down=True),
    StageSpec("level2", 128, 3, down=True),
    StageSpec("level1", 256, 3, down=True),
    StageSpec("level0", 256, 1, down=True),
)
"""In the order they run (dlib names them from the top: ``alevel0`` is last)."""

STAGE_NAMES: tuple[str, ...] = ("stem", *(s.name for s in STAGES))


def dlib_padding(kernel: int, stride: int) -> int:
    """dlib's default padding: none for a strided window, half the kernel otherwise."""
    return 0 if stride != 1 else kernel // 2


class Affine(nn.Module):
    """Per-channel ``y = weight * x + bias``: a batch norm frozen into its inference form.

    Frozen for good (buffers, never trained), as detection and face models fine-tune a
    backbone with frozen batch norm: the pretrained convolutions carry weights near 1e-3 and
    these scales near 10, and letting an optimizer move the scales collapses the network
    within an epoch (every descriptor turns to the same direction).
    """

    weight: Tensor
    bias: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))

    def reset_parameters(self) -> None:
        """The identity, as a freshly built batch norm would start."""
        self.weight.fill_(1.0)
        self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def pad_add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` where the smaller tensor is zero-padded at the end of each dimension (dlib)."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

    def grow(t: Tensor) -> Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """conv-affine-relu-conv-affine, added to the input (average-pooled 2x2/2 when ``down``)."""

    def __init__(self, in_channels: int, width: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, dlib_padding(3, stride))
        self.affine1 = Affine(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, dlib_padding(3, 1))
        self.affine2 = Affine(width)

    def forward(self, x: Tensor) -> Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(pad_add(out, shortcut))


class Stem(nn.Module):
    """7x7/2 convolution, affine, relu, 3x3/2 max pool (all unpadded, as in dlib)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, STEM_WIDTH, 7, 2, dlib_padding(7, 2))
        self.affine = Affine(STEM_WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2, dlib_padding(3, 2))


class DlibFaceResNet(nn.Module):
    """The whole network: ``forward`` maps ``[B, 3, H, W]`` (dlib-scaled RGB) to ``[B, 128]``
    when ``embedding`` is set, else to the 256-d pooled features."""

    def __init__(self, embedding: bool = True) -> None:
        super().__init__()
        self.stem = Stem()
        in_channels = STEM_WIDTH
        for spec in STAGES:
            blocks = []
            for i in range(spec.blocks):
                blocks.append(ResidualBlock(in_channels, spec.width, spec.down and i == 0))
                in_channels = spec.width
            self.add_module(spec.name, nn.Sequential(*blocks))
        self.pooled_dim = in_channels
        self.fc: nn.Linear | None = (
            nn.Linear(in_channels, EMBEDDING_DIM, bias=False) if embedding else None
        )

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` in the order they run, stem first."""
        return [(name, getattr(self, name)) for name in STAGE_NAMES]

    def forward_stages(self, x: Tensor, names: Sequence[str] = STAGE_NAMES) -> dict[str, Tensor]:
        """The output maps of the stages named in ``names`` (for branch architectures)."""
        out: dict[str, Tensor] = {}
        for name, module in self.stages():
            x = module(x)
            if name in names:
                out[name] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        for _, module in self.stages():
            x = module(x)
        x = x.mean(dim=(2, 3))
        return self.fc(x) if self.fc is not None else x
