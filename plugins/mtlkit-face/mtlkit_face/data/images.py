"""Decode image files to uint8 arrays of the channel count and size the backbone wants.

Mode conversions (any PIL mode in, "L" or "RGB" out):
- 16/32-bit integer and float images ("I;16*", "I", "F") are scaled linearly from the image's own
  min..max to 0..255 (contrast-stretched, never clipped), because 12-bit data stored in 16 bits
  would otherwise turn black; a constant image maps by the 16-bit range (0..1 for float).
- Alpha ("RGBA", "LA", "PA", "P" with transparency) is composited on black: transparent
  background reads as the dark background most face crops have.
- "CMYK", "YCbCr", "1" ... go through PIL's own conversion to RGB; RGB to "L" uses ITU-R 601 luma.
Decoded arrays are cached per (file, mtime, size, channels, output size), so folds and reruns in
one process decode each file once.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict

import numpy as np
from PIL import Image, UnidentifiedImageError

_HIGH_DEPTH = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_CACHE_BYTES = 1 << 30
_cache: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
_cache_bytes = 0


class BadImage(Exception):
    """One unreadable file; the dataset turns it into a DataError or a skipped entry."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _stretch(im: Image.Image) -> Image.Image:
    """A high-bit-depth image as "L", scaled by its own range (see the module docstring)."""
    a = np.asarray(im, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        out = (a - lo) * (255.0 / (hi - lo))
    else:
        out = a * (255.0 / (1.0 if im.mode == "F" else 65535.0))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _on_black(im: Image.Image) -> Image.Image:
    """Composite an image with alpha on black (premultiply), returning "L" or "RGB"."""
    gray = im.mode in ("LA", "La")
    im = im.convert("LA" if gray else "RGBA")
    a = np.asarray(im, dtype=np.uint16)
    colour, alpha = a[..., :-1], a[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if gray else out)


def to_channels(im: Image.Image, chans: int) -> Image.Image:
    """Convert any PIL mode to "L" (``chans=1``) or "RGB" (``chans=3``)."""
    if im.mode in _HIGH_DEPTH:
        im = _stretch(im)
    elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = _on_black(im.convert("RGBA") if im.mode in ("PA", "RGBa") else im)
    target = "L" if chans == 1 else "RGB"
    if im.mode == target:
        return im
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return im.convert(target)


def _open(path: str) -> Image.Image:
    """Open ``path`` lazily (header only), naming the file and the reason on failure.

    Anything but a regular file is refused before PIL sees it: a folder, a dangling symlink, or a
    pipe/device (which could block or never end). Every exception PIL raises on a malformed file
    becomes a ``BadImage``: a bad file is the data's fault, never a traceback from inside PIL. A
    file with a known image signature is called "truncated or corrupt", any other "not an image".
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadImage(path, f"is a broken symbolic link (to {os.readlink(path)!r})") from None
        raise BadImage(path, "file does not exist") from None
    except OSError as e:
        raise BadImage(path, f"cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadImage(path, "is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(path, "is not a regular file (a pipe, socket or device)")
    if st.st_size == 0:
        raise BadImage(path, "file is empty (0 bytes)")
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise BadImage(path, _unopenable(path)) from None
    except Image.DecompressionBombError as e:
        raise BadImage(path, f"is too large to decode safely ({e})") from None
    except OSError as e:
        if e.errno is not None:  # the OS refused (permissions...), not a malformed file
            raise BadImage(path, f"cannot be opened ({e.strerror or e})") from None
        raise BadImage(path, _unopenable(path, str(e) or type(e).__name__)) from None
    except Exception as e:  # SyntaxError, ValueError, struct.error...: a malformed header
        raise BadImage(path, _unopenable(path, f"{type(e).__name__}: {e}")) from None


def sniff_format(path: str) -> str | None:
    """The PIL format whose signature the file starts with (None: no known image signature).

    Tells a damaged image ("truncated or corrupt") from a file that is no image at all.
    """
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError:
        return None
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix):
                return fmt
        except Exception:  # a plugin's check that trips on a short prefix: not this format
            continue
    return None


def _unopenable(path: str, detail: str = "") -> str:
    """Why PIL could not open ``path``: damaged if it starts like an image, else not an image."""
    fmt = sniff_format(path)
    if fmt is None:
        return "is not an image PIL can read (no known image signature)"
    why = f" ({detail})" if detail else ""
    return f"is truncated or corrupt: starts like a {fmt} file, but PIL cannot open it{why}"


def open_image(path: str) -> Image.Image:
    """Open and fully decode ``path``, naming the file and the reason on failure."""
    im = _open(path)
    try:
        im.load()
    except Image.DecompressionBombError as e:
        im.close()
        raise BadImage(path, f"is too large to decode safely ({e})") from None
    except Exception as e:  # OSError, SyntaxError, EOFError, ValueError... from the decoder
        im.close()
        detail = str(e) or type(e).__name__
        reason = f"is truncated or corrupt: a {im.format or 'image'} file PIL cannot decode"
        raise BadImage(path, f"{reason} ({detail})") from None
    return im


def image_format(path: str) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) of an image, read from its header only."""
    with _open(path) as im:
        return im.mode, (im.width, im.height)


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of an image, read from its header only."""
    with _open(path) as im:
        return im.height, im.width


def decode(path: str, chans: int, size: tuple[int, int], *, cache: bool = True) -> np.ndarray:
    """Decode ``path`` to uint8 ``[chans, H, W]`` at ``size=(H, W)`` (bilinear; aspect not kept).

    ``cache=False`` for streamed data: each file is read once per epoch, and a per-worker cache
    of a data set larger than memory would only grow.
    """
    global _cache_bytes
    key: tuple[object, ...] = ()
    if cache:
        try:
            st = os.stat(path)
            key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, chans, size)
        except OSError:
            key = ()
    if key and key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    with open_image(path) as src:
        arr = to_array(src, chans, size, path)
    if key:
        _cache[key] = arr
        _cache_bytes += arr.nbytes
        while _cache_bytes > _CACHE_BYTES and _cache:
            _, old = _cache.popitem(last=False)
            _cache_bytes -= old.nbytes
    return arr


def to_array(src: Image.Image, chans: int, size: tuple[int, int], name: str) -> np.ndarray:
    """A decoded image as uint8 ``[chans, H, W]`` at ``size``; ``name`` names it on failure."""
    try:
        im = to_channels(src, chans)
        if (im.height, im.width) != size:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # ValueError, OSError...: PIL has no conversion for this mode
        raise BadImage(name, f"mode {src.mode!r} cannot be converted ({e})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def clear_cache() -> None:
    """Forget every decoded image (tests; or to free memory between experiments)."""
    global _cache_bytes
    _cache.clear()
    _cache_bytes = 0
