"""Vectorised drawing of simple faces: identity and expression are separate, known factors.

Identity fixes the face's aspect, eye spacing, nose length, skin tone (and tint) and hair (line,
tone, parting: a cue that survives every expression, as real hair does); expression
fixes the mouth curve/width/opening, the brows' height and tilt and the eye opening. Each frame
adds pose jitter (shift, rotation, scale), an expression-intensity wobble and pixel noise.
All images are drawn at once as soft masks on coordinate grids: no per-pixel Python.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CK_EXPRESSIONS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")

# mouth curve, mouth half-width, mouth opening, mouth asymmetry, brow raise, brow tilt, eye opening
_KNOWN: dict[str, tuple[float, ...]] = {
    "neutral": (0.0, 0.22, 0.0, 0.0, 0.0, 0.0, 1.0),
    "anger": (-0.08, 0.20, 0.0, 0.0, -0.06, 0.12, 0.55),
    "contempt": (0.04, 0.22, 0.0, 0.16, 0.0, 0.0, 0.9),
    "disgust": (-0.16, 0.26, 0.05, 0.0, -0.04, 0.05, 0.35),
    "fear": (-0.06, 0.30, 0.10, 0.0, 0.10, -0.10, 1.45),
    "happy": (0.22, 0.32, 0.04, 0.0, 0.02, 0.0, 0.7),
    "sadness": (-0.18, 0.22, 0.0, 0.0, 0.04, -0.13, 0.8),
    "surprise": (0.0, 0.14, 0.22, 0.0, 0.16, 0.0, 1.6),
}
_RANGES = (
    (-0.18, 0.22),
    (0.14, 0.32),
    (0.0, 0.22),
    (-0.16, 0.16),
    (-0.06, 0.16),
    (-0.13, 0.12),
    (0.35, 1.6),
)


def expression_params(names: list[str]) -> np.ndarray:
    """``[E, 7]`` parameters; names outside the CK+ set get a stable draw seeded by the name."""
    rows = []
    for name in names:
        if name in _KNOWN:
            rows.append(_KNOWN[name])
        else:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            rows.append(tuple(rng.uniform(lo, hi) for lo, hi in _RANGES))
    return np.array(rows, dtype=np.float32)


def identity_params(num: int, rng: np.random.Generator) -> np.ndarray:
    """``[K, 8]`` (aspect, eye spacing, nose length, tone, tint, hairline, hair tone, parting),
    Latin-hypercube spread so that any two identities differ in every factor by a level."""
    lo = np.array([0.60, 0.17, 0.08, 0.45, 0.0, 0.12, 0.0, -0.35], dtype=np.float32)
    hi = np.array([0.92, 0.36, 0.32, 0.95, 1.0, 0.55, 0.3, 0.35], dtype=np.float32)
    levels = np.stack([rng.permutation(num) for _ in lo], axis=1).astype(np.float32)
    u = (levels + rng.uniform(0.3, 0.7, size=levels.shape)) / num
    return (lo + u * (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class FrameSpec:
    """Per-image factors, one row per image (all float32 ``[N]`` or ``[N, k]``)."""

    identity: np.ndarray  # [N, 5]
    expression: np.ndarray  # [N, 7]
    pose: np.ndarray  # [N, 4]: tx, ty, rotation (rad), scale
    intensity: np.ndarray  # [N]
    background: np.ndarray  # [N]

    def take(self, rows: slice) -> FrameSpec:
        """The factors of ``rows`` only (images are drawn in chunks to bound memory)."""
        return FrameSpec(
            self.identity[rows],
            self.expression[rows],
            self.pose[rows],
            self.intensity[rows],
            self.background[rows],
        )


def _soft(margin: Tensor, edge: float) -> Tensor:
    """Anti-aliased inside-mask from a signed margin (positive inside)."""
    return torch.sigmoid(margin / edge)


def _segment_dist(u: Tensor, v: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance of grid points to segments a->b; a, b are ``[N, 2]``."""
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    dx, dy = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    t = (((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy + 1e-8)).clamp(0, 1)
    return torch.hypot(u - ax - t * dx, v - ay - t * dy)


def draw(spec: FrameSpec, size: int, chans: int) -> Tensor:
    """Float ``[N, chans, size, size]`` faces for ``spec``, noise-free, in [0, 1]."""
    n = len(spec.intensity)
    edge = 1.2 / size
    ident = torch.from_numpy(spec.identity)
    expr = torch.from_numpy(spec.expression)
    neutral = torch.tensor(_KNOWN["neutral"])
    k = torch.from_numpy(spec.intensity)[:, None]
    expr = neutral + k * (expr - neutral)
    pose = torch.from_numpy(spec.pose)

    def col(t: Tensor, j: int) -> Tensor:
        return t[:, j, None, None]

    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = grid.view(1, size, 1), grid.view(1, 1, size)
    cos, sin = torch.cos(col(pose, 2)), torch.sin(col(pose, 2))
    x0, y0 = x - col(pose, 0), y - col(pose, 1)
    u = (cos * x0 + sin * y0) / col(pose, 3)
    v = (-sin * x0 + cos * y0) / col(pose, 3)
    edge_uv = edge / pose[:, 3, None, None]

    ay = 0.82
    ax = ay * col(ident, 0)
    head_r = torch.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    head = _soft((1 - head_r) * ax, edge_uv)
    tone = col(ident, 3)
    bg = torch.from_numpy(spec.background)[:, None, None]
    canvas = bg + head * (tone - bg)  # luminance; colour tint applied at the end
    hair_r = torch.sqrt((u / (ax * 1.06)) ** 2 + (v / (ay * 1.06)) ** 2)
    hairline = -ay + col(ident, 5) + col(ident, 7) * u
    hair = _soft((1 - hair_r) * ax, edge_uv) * _soft(hairline - v, edge_uv)
    canvas = canvas + hair * (col(ident, 6) - canvas)
    skin = head * (1 - hair)

    ex, ey = col(ident, 1), -0.12
    eye_open = col(expr, 6)
    for side in (-1.0, 1.0):
        eu, ev = (u - side * ex) / 0.1, (v - ey) / (0.075 * eye_open)
        eye = _soft((1 - torch.sqrt(eu * eu + ev * ev)) * 0.075 * eye_open, edge_uv)
        canvas = canvas + eye * (0.06 - canvas)
        by = ey - 0.17 - expr[:, 4]
        tilt = expr[:, 5]
        inner = torch.stack([side * (ident[:, 1] - 0.12), by + tilt], dim=1)
        outer = torch.stack([side * (ident[:, 1] + 0.12), by - tilt], dim=1)
        brow = _soft(0.045 - _segment_dist(u, v, inner, outer), edge_uv)
        canvas = canvas + brow * (0.12 - canvas)

    top = torch.stack([torch.zeros(n), torch.full((n,), ey + 0.06)], dim=1)
    tip = torch.stack([torch.zeros(n), ey + 0.06 + ident[:, 2]], dim=1)
    nose = _soft(0.03 - _segment_dist(u, v, top, tip), edge_uv)
    canvas = canvas + nose * (0.55 * tone - canvas)

    my = 0.42
    mw = col(expr, 1)
    s = u / mw
    centre = my - col(expr, 0) * s * s + col(expr, 3) * s
    half = 0.04 + col(expr, 2) * (1 - s * s).clamp_min(0)
    mouth = _soft(torch.minimum(half - (v - centre).abs(), (1 - s.abs()) * mw), edge_uv)
    canvas = canvas + mouth * (0.1 - canvas)

    if chans == 3:
        t = col(ident, 4)
        tint = torch.stack([1.0 + 0.0 * t, 0.78 + 0.12 * t, 0.62 + 0.25 * t], dim=1)
        tinted = skin.unsqueeze(1)
        img = canvas.unsqueeze(1) * (tinted * tint + (1 - tinted))
    else:
        img = canvas.unsqueeze(1)
    return img.clamp(0, 1)


def finish(img: Tensor, size: tuple[int, int], noise: float, gen: torch.Generator) -> Tensor:
    """Add pixel noise (at drawing resolution, cheaper), resize to ``size`` (H, W), quantise."""
    if noise > 0:
        img = img + noise * torch.randn(img.shape, generator=gen)
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    return (img.clamp(0, 1) * 255).round_().to(torch.uint8)


def frame_specs(
    identity_of: np.ndarray,
    expression_of: np.ndarray,
    identities: np.ndarray,
    expressions: np.ndarray,
    jitter: float,
    rng: np.random.Generator,
) -> FrameSpec:
    """Factors of each frame: its identity/expression rows plus random pose and intensity."""
    n = len(identity_of)
    shift = rng.uniform(-0.04, 0.04, size=(n, 2)) * jitter
    rot = rng.uniform(-1, 1, size=n) * math.radians(6) * jitter
    scale = 1 + rng.uniform(-0.05, 0.05, size=n) * jitter
    pose = np.column_stack([shift, rot, scale]).astype(np.float32)
    return FrameSpec(
        identity=identities[identity_of],
        expression=expressions[expression_of],
        pose=pose,
        intensity=rng.uniform(0.8, 1.0, size=n).astype(np.float32),
        background=rng.uniform(0.0, 0.25, size=n).astype(np.float32),
    )
