"""New image files for ``mtlkit predict``: what an input names, decoded like the training data.

Mixed into every face dataset, so a trained face model reads new images exactly as it read its
training images (the same mode conversions and resize as ``mtlkit_face.data.images.decode``), and
says which of them a file needed (predict counts and reports them, or refuses them with
``--strict-inputs``). An input is an image file, a folder (searched recursively, hidden entries
skipped) or a manifest CSV in the face-data format (``mtlkit_face.data.manifest_csv``: its ``path``
column, resolved and checked the same way).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mtlkit.data import Conversion, InputFile, InputSample
from mtlkit.errors import DataError
from mtlkit_face.data.images import BadImage, image_format, open_image, to_array
from mtlkit_face.data.manifest_csv import read_manifest_table
from mtlkit_face.data.records import FaceRecord, natural_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")
"""What a folder input is searched for (case-insensitive)."""
MANIFEST_SUFFIXES = (".csv", ".tsv")
MODE_NAMES = {
    "L": "grayscale",
    "RGB": "colour (RGB)",
    "RGBA": "colour with alpha (RGBA)",
    "LA": "grayscale with alpha (LA)",
    "P": "palette (P)",
    "PA": "palette with alpha (PA)",
    "1": "bilevel (1)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "I": "32-bit grayscale (I)",
    "F": "float grayscale (F)",
}
"""How a PIL mode is named in the conversions predict reports."""


def mode_name(mode: str) -> str:
    """A PIL mode in words (``I;16`` variants are 16-bit grayscale)."""
    if mode.startswith("I;16"):
        return f"16-bit grayscale ({mode})"
    return MODE_NAMES.get(mode, f"mode {mode}")


def conversions(
    mode: str,
    size: tuple[int, int],
    chans: int,
    target: tuple[int, int],
    native: tuple[str, tuple[int, int]] | None = None,
) -> tuple[Conversion, ...]:
    """What an image of PIL ``mode`` and ``size`` (W, H) needs to become ``chans`` channels at
    ``target`` (H, W): a mode conversion, a resize, both or nothing. With ``native`` (the
    training images' own mode and (W, H)), the preparation every training image had is no
    conversion: a 48x48 grayscale CK+48 file fed to an RGB model at 64 px is read as training
    read its images."""
    out: list[Conversion] = []
    wanted = "L" if chans == 1 else "RGB"
    if mode != wanted and (native is None or mode != native[0]):
        out.append(Conversion(f"{mode_name(mode)} to {mode_name(wanted)}"))
    if (size[1], size[0]) != target and (native is None or tuple(size) != tuple(native[1])):
        out.append(Conversion("resized", f"from {size[0]}x{size[1]} to {target[1]}x{target[0]}"))
    return tuple(out)


SCANNED = 2000
"""Training images whose headers a streamed data set checks for their format (all of them when
the images are decoded into memory anyway)."""


def note_training_formats(
    dataset: str,
    records: Sequence[FaceRecord],
    chans: int,
    target: tuple[int, int],
    limit: int | None = None,
) -> dict[str, Any] | None:
    """The training images' common format (``{"mode", "size": [W, H]}``, None without files),
    and one notice, as ``mtlkit predict`` gives, when some of them have another size or mode
    and were converted to the model's input: their count and an example. Such an image is
    silently different from the rest (a colour photo among grayscale frames)."""
    formats: dict[int, tuple[str, tuple[int, int]]] = {}
    for i, r in enumerate(records[:limit] if limit is not None else records):
        if r.path is None:
            continue
        try:
            formats[i] = image_format(r.path)
        except BadImage:  # refused or skipped where the images are read
            continue
    if not formats:
        return None
    native = Counter(formats.values()).most_common(1)[0][0]
    odd = {
        i: conv for i, fmt in formats.items()
        if fmt != native and (conv := conversions(*fmt, chans, target, native))
    }
    if odd:
        first = next(iter(odd))
        mode, (w, h) = formats[first]
        shown = "; ".join(str(c) for c in odd[first])
        checked = f" (headers of the first {limit} checked)" if limit is not None else ""
        warnings.warn(
            f"{dataset}: converted {len(odd)} of {len(formats)} training image(s) of another size"
            f" or colour mode than the rest ({mode_name(native[0])} {native[1][0]}x"
            f"{native[1][1]}){checked} to the model's input, e.g. {records[first].path}"
            f" ({mode_name(mode)} {w}x{h}): {shown}",
            stacklevel=3,
        )
    return {"mode": native[0], "size": list(native[1])}


def _folder_images(folder: Path) -> list[Path]:
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))


def _manifest_images(manifest: Path) -> list[InputFile]:
    records, _, _ = read_manifest_table(manifest, None)
    folder = os.path.dirname(os.path.abspath(manifest))
    return [
        InputFile(
            path=str(r.path),
            name=os.path.join(str(manifest.parent), os.path.relpath(str(r.path), folder)),
            origin=r.origin,
        )
        for r in records
    ]


class FaceInputFiles:
    """The :class:`mtlkit.data.ReadsInputFiles` capability of the face datasets."""

    _native: tuple[str, tuple[int, int]] | None = None

    def use_data_info(self, info: Mapping[str, Any]) -> None:
        """Take the training images' format (``info["input_format"]``, as setup recorded it):
        a file in that format is prepared as training prepared its images, not converted."""
        fmt = info.get("input_format")
        if isinstance(fmt, Mapping) and fmt.get("mode") and len(fmt.get("size") or ()) == 2:
            self._native = (str(fmt["mode"]), (int(fmt["size"][0]), int(fmt["size"][1])))

    def list_input_files(self, source: str) -> list[InputFile]:
        """The images ``source`` names: itself, a folder's images, or a manifest's rows."""
        path = Path(source).expanduser()
        if path.is_dir():
            images = _folder_images(path)
            if not images:
                raise DataError(
                    f"input folder {source} holds no image files"
                    f" ({', '.join('*' + s for s in IMAGE_SUFFIXES)}, searched recursively)"
                )
            return [InputFile(path=str(p), name=str(p)) for p in images]
        if not path.exists():
            raise DataError(f"input {source} does not exist")
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return _manifest_images(path)
        return [InputFile(path=str(path), name=source)]

    def read_input_file(self, path: str, like: torch.Tensor) -> InputSample:
        """``path`` decoded to a stored sample shaped like ``like`` (uint8 ``[C, H, W]``): any
        mode converted to its channels and resized to its size, as in training, with what it
        needed of that."""
        if like.ndim != 3 or like.dtype != torch.uint8:
            raise DataError(
                f"cannot read {path} for this model: its data holds {like.dtype} samples of"
                f" shape {tuple(like.shape)}, not uint8 images [C, H, W]"
            )
        chans, size = int(like.shape[0]), (int(like.shape[1]), int(like.shape[2]))
        try:
            with open_image(path) as src:
                changes = conversions(src.mode, src.size, chans, size, self._native)
                array = to_array(src, chans, size, path)
        except BadImage as bad:
            raise DataError(str(bad)) from None
        return InputSample(torch.tensor(array), changes)
