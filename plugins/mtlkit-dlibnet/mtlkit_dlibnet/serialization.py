"""A reader for dlib's binary serialisation, enough for its DNN weight files.

dlib writes integers as a control byte (length, sign bit 0x80) and little-endian bytes, strings
as a length then raw bytes, scalars as a 64-bit mantissa and 16-bit exponent, and tensors as four
dimensions then raw little-endian float32. Reading it ourselves means dlib is never needed at run
time, only in the test that checks our network against it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The bytes are not what the dlib network being read should contain at this point."""


class DlibReader:
    """A cursor over the bytes of a dlib-serialised object."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self._data = memoryview(data)
        self.pos = 0
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path) -> DlibReader:
        path = Path(path)
        return cls(path.read_bytes(), name=str(path))

    # --- primitives ----------------------------------------------------------------------------
    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self._data):
            raise DlibFormatError(
                f"{self.name}: unexpected end of data at byte {self.pos} (wanted {n} more)"
            )
        out = self._data[self.pos : self.pos + n]
        self.pos += n
        return out

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}, byte {self.pos}: {message}")

    def int(self) -> int:
        """A signed or unsigned integer of any width (dlib's pack_int)."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def bool(self) -> bool:
        ch = self._take(1)[0]
        if ch not in (ord("0"), ord("1")):
            raise self.fail(f"bad bool byte 0x{ch:02x}")
        return ch == ord("1")

    def string(self) -> str:
        size = self.int()
        return bytes(self._take(size)).decode("latin-1")

    def expect(self, *versions: str) -> str:
        """Read a version string and insist it is one of ``versions``."""
        start = self.pos
        try:
            value = self.string()
        except DlibFormatError:
            value = "<not a string>"
        if value not in versions:
            self.pos = start
            raise self.fail(f"expected {' or '.join(map(repr, versions))}, found {value!r}")
        return value

    def version(self, *allowed: int) -> int:
        value = self.int()
        if value not in allowed:
            raise self.fail(f"unexpected version {value} (known: {allowed})")
        return value

    def float(self) -> float:
        """A float/double in dlib's portable form: mantissa * 2**exponent."""
        if self._data[self.pos] & 0x70:
            raise self.fail("old ASCII floating-point format is not supported")
        mantissa = self.int()
        exponent = self.int()
        specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        if exponent in specials:
            return specials[exponent]
        return math.ldexp(float(mantissa), exponent)

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version 2, (n, k, nr, nc), float32 little-endian values."""
        self.version(2)
        shape = tuple(self.int() for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor shape {shape}")
        count = math.prod(shape)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only a shape (its values live in the layer's ``params``)."""
        self.version(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos
