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
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

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
    attributes: np.ndarray | None = None
    """``[N, 40]`` 0/1 per name of ``ATTRIBUTES``; None draws plain faces (bit-identical to
    before attributes existed)."""

    def take(self, rows: slice) -> FrameSpec:
        """The factors of ``rows`` only (images are drawn in chunks to bound memory)."""
        return FrameSpec(
            self.identity[rows],
            self.expression[rows],
            self.pose[rows],
            self.intensity[rows],
            self.background[rows],
            None if self.attributes is None else self.attributes[rows],
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


ATTRIBUTES = (
    "five_o_clock_shadow", "arched_eyebrows", "attractive", "bags_under_eyes", "bald",
    "bangs", "big_lips", "big_nose", "black_hair", "blond_hair",
    "blurry", "brown_hair", "bushy_eyebrows", "chubby", "double_chin",
    "eyeglasses", "goatee", "gray_hair", "heavy_makeup", "high_cheekbones",
    "male", "mouth_slightly_open", "mustache", "narrow_eyes", "no_beard",
    "oval_face", "pale_skin", "pointy_nose", "receding_hairline", "rosy_cheeks",
    "sideburns", "smiling", "straight_hair", "wavy_hair", "wearing_earrings",
    "wearing_hat", "wearing_lipstick", "wearing_necklace", "wearing_necktie", "young",
)  # fmt: skip
"""CelebA's 40 attributes in its column order, lower-cased (``5_o_Clock_Shadow`` ->
``five_o_clock_shadow``, a name must not start with a digit in every tool)."""

_HAIR_TONES = (("black_hair", 0.03), ("brown_hair", 0.45), ("gray_hair", 0.66),
               ("blond_hair", 0.9))  # fmt: skip
"""Hair colour overrides, later ones win when several are set."""


class _Attrs:
    """``[N, 1, 1]`` 0/1 columns of an attribute matrix, by name."""

    def __init__(self, values: np.ndarray) -> None:
        if values.shape[1] != len(ATTRIBUTES):
            raise ValueError(f"attributes need {len(ATTRIBUTES)} columns, got {values.shape[1]}")
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))

    def __getitem__(self, name: str) -> Tensor:
        return self.values[:, ATTRIBUTES.index(name), None, None]

    def rows(self, name: str) -> Tensor:
        return self.values[:, ATTRIBUTES.index(name)]


def _paint(canvas: Tensor, mask: Tensor, colour: Tensor | float) -> Tensor:
    return canvas + mask * (colour - canvas)


def _ellipse(u: Tensor, v: Tensor, cu: Tensor | float, cv: Tensor | float, ru: float,
             rv: float, edge: Tensor) -> Tensor:
    r = torch.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return _soft((1 - r) * min(ru, rv), edge)


def _points(u: Tensor | float, v: Tensor | float, n: int) -> Tensor:
    """``[n, 2]`` points from scalars or ``[n]`` tensors."""
    uu = u if isinstance(u, Tensor) else torch.full((n,), float(u))
    vv = v if isinstance(v, Tensor) else torch.full((n,), float(v))
    return torch.stack([uu, vv], dim=1)


class _Rows:
    """Per-image tensors of one drawing, gathered for the images an attribute changes: a rare
    attribute costs only its own images."""

    def __init__(self, **fields: Tensor) -> None:
        self.fields = fields

    def take(self, idx: Tensor) -> SimpleNamespace:
        return SimpleNamespace(**{k: t[idx] for k, t in self.fields.items()}, n=len(idx))

    def paint(self, canvas: Tensor, at: _Attrs, name: str,
              mask: Callable[[SimpleNamespace], Tensor],
              colour: float | Callable[[SimpleNamespace], Tensor], when: int = 1) -> Tensor:
        idx = torch.nonzero(at.rows(name) == when).squeeze(1)
        if idx.numel() == 0:
            return canvas
        r = self.take(idx)
        c = colour(r) if callable(colour) else colour
        out = canvas.clone()
        out[idx] = _paint(canvas[idx], mask(r), c)
        return out


def _sideburns(r: SimpleNamespace) -> Tensor:
    m = _soft(r.u.abs() - 0.78 * r.ax, r.edge) * _soft(r.v + 0.25, r.edge)
    return m * _soft(0.2 - r.v, r.edge) * r.skin


def _double_chin(r: SimpleNamespace) -> Tensor:
    line = _soft(0.03 - (r.v - 0.68 - 0.8 * r.u * r.u).abs(), r.edge)
    return line * _soft(0.3 - r.u.abs(), r.edge) * r.head


def _both_sides(r: SimpleNamespace, one: Callable[[SimpleNamespace, float], Tensor]) -> Tensor:
    return torch.maximum(one(r, -1.0), one(r, 1.0))


def _cheeks(r: SimpleNamespace) -> Tensor:
    return _both_sides(r, lambda r, s: _ellipse(r.u, r.v, s * (r.ex + 0.06), 0.14, 0.11, 0.08,
                                                r.edge))


def _cheekbones(r: SimpleNamespace) -> Tensor:
    def one(r: SimpleNamespace, s: float) -> Tensor:
        a = _points(s * r.ax[:, 0, 0] * 0.85, 0.0, r.n)
        b = _points(s * r.ax[:, 0, 0] * 0.45, 0.24, r.n)
        return _soft(0.022 - _segment_dist(r.u, r.v, a, b), r.edge)

    return _both_sides(r, one)


def _bags(r: SimpleNamespace) -> Tensor:
    return _both_sides(r, lambda r, s: _ellipse(r.u, r.v, s * r.ex, -0.01, 0.11, 0.045, r.edge))


def _eye_shadow(r: SimpleNamespace) -> Tensor:
    return _both_sides(r, lambda r, s: _ellipse(r.u, r.v, s * r.ex, -0.14, 0.15, 0.09, r.edge))


def _crows_feet(r: SimpleNamespace) -> Tensor:
    def one(r: SimpleNamespace, s: float) -> Tensor:
        corner = _points(s * (r.eyes[:, 0, 0] + 0.11), -0.12, r.n)
        dist = torch.stack([
            _segment_dist(r.u, r.v, corner, _points(s * (r.eyes[:, 0, 0] + 0.24), -0.12 + dv, r.n))
            for dv in (-0.07, 0.0, 0.07)
        ]).amin(0)
        return _soft(0.024 - dist, r.edge)

    return _both_sides(r, one)


def _pointy(r: SimpleNamespace) -> Tensor:
    def one(r: SimpleNamespace, s: float) -> Tensor:
        wing = _points(torch.full((r.n,), s * 0.08), r.tip[:, 1] - 0.08, r.n)
        return _soft(0.022 - _segment_dist(r.u, r.v, r.tip, wing), r.edge)

    return _both_sides(r, one)


def _moustache(r: SimpleNamespace) -> Tensor:
    a, b = _points(-0.22, 0.31, r.n), _points(0.22, 0.31, r.n)
    return _soft(0.04 - _segment_dist(r.u, r.v, a, b), r.edge)


def _glasses(r: SimpleNamespace) -> Tensor:
    rings = _both_sides(
        r, lambda r, s: _soft(0.028 - (torch.hypot(r.u - s * r.ex, r.v + 0.12) - 0.16).abs(),
                              r.edge))
    a = _points(-r.eyes[:, 0, 0] + 0.16, -0.12, r.n)
    b = _points(r.eyes[:, 0, 0] - 0.16, -0.12, r.n)
    return torch.maximum(rings, _soft(0.025 - _segment_dist(r.u, r.v, a, b), r.edge))


def _earrings(r: SimpleNamespace) -> Tensor:
    return _both_sides(r, lambda r, s: _ellipse(r.u, r.v, s * r.ax * 1.02, 0.12, 0.05, 0.05,
                                                r.edge))


def _hat(r: SimpleNamespace) -> Tensor:
    crown_r = torch.sqrt((r.u / (r.ax * 1.15)) ** 2 + (r.v / (0.82 * 1.12)) ** 2)
    crown = _soft((1 - crown_r) * r.ax, r.edge) * _soft(-0.5 - r.v, r.edge)
    brim = _soft(0.045 - (r.v + 0.5).abs(), r.edge) * _soft(1.4 * r.ax - r.u.abs(), r.edge)
    return torch.maximum(crown, brim)


def _necklace(r: SimpleNamespace) -> Tensor:
    chain = _soft(0.03 - (r.v - 0.8 - 0.3 * r.u * r.u).abs(), r.edge)
    return chain * _soft(0.5 - r.u.abs(), r.edge)


def _necktie(r: SimpleNamespace) -> Tensor:
    tie = _soft(0.12 - r.u.abs() - 0.3 * (r.v - 0.78).clamp_min(0), r.edge)
    return tie * _soft(r.v - 0.78, r.edge)


def draw(spec: FrameSpec, size: int, chans: int) -> Tensor:
    """Float ``[N, chans, size, size]`` faces for ``spec``, noise-free, in [0, 1].

    With ``spec.attributes``, each of the 40 ``ATTRIBUTES`` set on an image changes its drawing
    (a hat, glasses, a smile, a hair colour...); see the face plugin's README for the list.
    """
    n = len(spec.intensity)
    edge = 1.2 / size
    ident = torch.from_numpy(spec.identity)
    expr = torch.from_numpy(spec.expression)
    neutral = torch.tensor(_KNOWN["neutral"])
    k = torch.from_numpy(spec.intensity)[:, None]
    expr = neutral + k * (expr - neutral)
    pose = torch.from_numpy(spec.pose)
    at = _Attrs(spec.attributes) if spec.attributes is not None else None

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
    if at is not None:
        ax = ax * (1 + 0.18 * at["chubby"])
        # oval face: the lower half narrows towards the chin; male: a squarer jaw
        ax_low = ax * (1 - 0.3 * at["oval_face"] * (v / ay).clamp(0, 1))
        round_r = torch.sqrt((u / ax_low) ** 2 + (v / ay) ** 2)
        square_r = ((u / ax_low) ** 4 + (v / ay) ** 4) ** 0.25
        low_r = round_r + at["male"] * (square_r - round_r)
        head_r = torch.where(v > 0, low_r, torch.sqrt((u / ax) ** 2 + (v / ay) ** 2))
    else:
        head_r = torch.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    head = _soft((1 - head_r) * ax, edge_uv)
    tone = col(ident, 3)
    if at is not None:
        tone = tone + at["pale_skin"] * (0.97 - tone)
    bg = torch.from_numpy(spec.background)[:, None, None]
    canvas = bg + head * (tone - bg)  # luminance; colour tint applied at the end
    hair_r = torch.sqrt((u / (ax * 1.06)) ** 2 + (v / (ay * 1.06)) ** 2)
    hairline = -ay + col(ident, 5) + col(ident, 7) * u
    hair_tone = col(ident, 6)
    if at is None:
        hair = _soft((1 - hair_r) * ax, edge_uv) * _soft(hairline - v, edge_uv)
    else:
        wavy = at["wavy_hair"]
        hair_r = hair_r + wavy * 0.05 * torch.sin(v * 30)
        hairline = hairline - 0.35 * at["receding_hairline"] * (u / ax) ** 2
        hairline = hairline + wavy * 0.06 * torch.sin(u * 30)
        outline = _soft((1 - hair_r) * ax, edge_uv)
        hair = outline * _soft(hairline - v, edge_uv)
        # bald: only the rim beside and above the ears keeps hair
        rim = outline * _soft((head_r - 1) * ax, edge_uv) * _soft(0.1 - v, edge_uv)
        hair = hair + at["bald"] * (rim - hair)
        # straight hair: long strands down both sides of the face
        side = _soft(ax * 1.25 - u.abs(), edge_uv) * _soft(u.abs() - ax * 0.9, edge_uv)
        strands = side * _soft(0.8 - v, edge_uv) * _soft(v + 0.3, edge_uv)
        hair = torch.maximum(hair, at["straight_hair"] * strands)
        fringe = head * _soft(-0.27 + 0.04 * torch.cos(u * 40) - v, edge_uv)
        hair = torch.maximum(hair, at["bangs"] * fringe * _soft(0.8 * ax - u.abs(), edge_uv))
        for name, value in _HAIR_TONES:
            hair_tone = hair_tone + at[name] * (value - hair_tone)
    canvas = canvas + hair * (hair_tone - canvas)
    skin = head * (1 - hair)

    ex, ey = col(ident, 1), -0.12
    if at is not None:
        g = _Rows(u=u, v=v, ex=ex, ax=ax, tone=tone, edge=edge_uv, skin=skin, head=head,
                  head_r=head_r, eyes=ident[:, 1, None, None])
        canvas = g.paint(canvas, at, "five_o_clock_shadow",
                         lambda r: r.skin * _soft(r.v - 0.3, r.edge), lambda r: 0.72 * r.tone)
        canvas = g.paint(canvas, at, "no_beard",
                         lambda r: r.skin * _soft(r.v - 0.36, r.edge), 0.14, when=0)
        canvas = g.paint(canvas, at, "goatee",
                         lambda r: _ellipse(r.u, r.v, 0.0, 0.66, 0.13, 0.14, r.edge), 0.14)
        canvas = g.paint(canvas, at, "sideburns", _sideburns, 0.18)
        canvas = g.paint(canvas, at, "double_chin", _double_chin, lambda r: 0.4 * r.tone)
        canvas = g.paint(canvas, at, "rosy_cheeks", _cheeks, lambda r: 0.72 * r.tone)
        canvas = g.paint(canvas, at, "high_cheekbones", _cheekbones, lambda r: 0.55 * r.tone)
        canvas = g.paint(canvas, at, "bags_under_eyes", _bags, lambda r: 0.4 * r.tone)
        canvas = g.paint(canvas, at, "heavy_makeup", _eye_shadow, 0.22)
        canvas = g.paint(canvas, at, "young", _crows_feet, lambda r: 0.3 * r.tone, when=0)

    eye_open = col(expr, 6)
    if at is not None:
        eye_open = eye_open * (1 - 0.55 * at["narrow_eyes"])
    for side in (-1.0, 1.0):
        eu, ev = (u - side * ex) / 0.1, (v - ey) / (0.075 * eye_open)
        eye = _soft((1 - torch.sqrt(eu * eu + ev * ev)) * 0.075 * eye_open, edge_uv)
        canvas = canvas + eye * (0.06 - canvas)
        by = ey - 0.17 - expr[:, 4]
        tilt = expr[:, 5]
        inner = torch.stack([side * (ident[:, 1] - 0.12), by + tilt], dim=1)
        outer = torch.stack([side * (ident[:, 1] + 0.12), by - tilt], dim=1)
        dist = _segment_dist(u, v, inner, outer)
        if at is None:
            brow = _soft(0.045 - dist, edge_uv)
        else:
            idx = torch.nonzero(at.rows("arched_eyebrows")).squeeze(1)
            if idx.numel():
                mid = (inner[idx] + outer[idx]) / 2 - torch.tensor([0.0, 0.08])
                ui, vi = u[idx], v[idx]
                dist = dist.clone()
                dist[idx] = torch.minimum(_segment_dist(ui, vi, inner[idx], mid),
                                          _segment_dist(ui, vi, mid, outer[idx]))
            brow = _soft(0.045 + 0.035 * at["bushy_eyebrows"] - dist, edge_uv)
        canvas = canvas + brow * (0.12 - canvas)

    nose_len, nose_w = ident[:, 2], 0.03
    if at is not None:
        nose_len = nose_len + 0.08 * at.rows("big_nose")
        nose_w = 0.03 + 0.04 * at["big_nose"]
    top = torch.stack([torch.zeros(n), torch.full((n,), ey + 0.06)], dim=1)
    tip = torch.stack([torch.zeros(n), ey + 0.06 + nose_len], dim=1)
    nose = _soft(nose_w - _segment_dist(u, v, top, tip), edge_uv)
    canvas = canvas + nose * (0.55 * tone - canvas)
    if at is not None:
        g = _Rows(u=u, v=v, tone=tone, edge=edge_uv, tip=tip)
        canvas = g.paint(canvas, at, "pointy_nose", _pointy, lambda r: 0.35 * r.tone)

    my = 0.42
    if at is not None:
        smile = at.rows("smiling")[:, None]
        expr = expr + smile * (torch.tensor(_KNOWN["happy"]) - expr)
        opening = expr[:, 2] + 0.1 * at.rows("mouth_slightly_open")
        expr = torch.cat([expr[:, :2], opening[:, None], expr[:, 3:]], dim=1)
    mw = col(expr, 1)
    s = u / mw
    centre = my - col(expr, 0) * s * s + col(expr, 3) * s
    half = 0.04 + col(expr, 2) * (1 - s * s).clamp_min(0)
    if at is not None:
        half = half + 0.035 * at["big_lips"]
        lw = mw + 0.05
        lips = torch.minimum(half + 0.06 - (v - centre).abs(), (1 - (u / lw).abs()) * lw)
        canvas = _paint(canvas, at["wearing_lipstick"] * _soft(lips, edge_uv), 0.25)
        g = _Rows(u=u, v=v, edge=edge_uv)
        canvas = g.paint(canvas, at, "mustache", _moustache, 0.08)
    mouth = _soft(torch.minimum(half - (v - centre).abs(), (1 - s.abs()) * mw), edge_uv)
    canvas = canvas + mouth * (0.1 - canvas)

    if at is not None:
        g = _Rows(u=u, v=v, ex=ex, ax=ax, edge=edge_uv, head_r=head_r,
                  eyes=ident[:, 1, None, None])
        canvas = g.paint(canvas, at, "eyeglasses", _glasses, 0.02)
        canvas = g.paint(canvas, at, "wearing_earrings", _earrings, 0.97)
        canvas = g.paint(canvas, at, "attractive",
                         lambda r: _soft(0.03 - (r.head_r - 1).abs() * r.ax, r.edge), 1.0)
        canvas = g.paint(canvas, at, "wearing_hat", _hat, 0.93)
        canvas = g.paint(canvas, at, "wearing_necklace", _necklace, 1.0)
        canvas = g.paint(canvas, at, "wearing_necktie", _necktie, 0.6)

    if chans == 3:
        t = col(ident, 4)
        tint = torch.stack([1.0 + 0.0 * t, 0.78 + 0.12 * t, 0.62 + 0.25 * t], dim=1)
        tinted = skin.unsqueeze(1)
        img = canvas.unsqueeze(1) * (tinted * tint + (1 - tinted))
    else:
        img = canvas.unsqueeze(1)
    if at is not None:
        blurry = at.rows("blurry").bool()
        if bool(blurry.any()):
            k = 2 * max(1, round(1.5 * size / 48)) + 1
            soft_img = F.avg_pool2d(img[blurry], k, stride=1, padding=k // 2,
                                    count_include_pad=False)
            img = img.clone()
            img[blurry] = soft_img
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
