"""dlib's primitive encodings, byte by byte, and the errors on bytes that are not them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mtlkit_dlibnet.serialization import DlibFormatError, DlibReader


def _int(value: int) -> bytes:
    """dlib's pack_int: a control byte (length | 0x80 when negative), then little-endian bytes."""
    mag = abs(value)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _str(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def test_integers_of_every_width_and_sign() -> None:
    values = [0, 1, 255, 256, 65_535, 2**40 + 7, -1, -300, -(2**62)]
    r = DlibReader(b"".join(_int(v) for v in values))
    assert [r.int() for _ in values] == values
    assert r.remaining == 0


def test_strings_bools_and_versions() -> None:
    r = DlibReader(_str("con_5") + b"10" + _str("relu_") + _int(2))
    assert r.expect("con_4", "con_5") == "con_5"
    assert (r.bool(), r.bool()) == (True, False)
    with pytest.raises(DlibFormatError, match=r"expected 'fc_2', found 'relu_'"):
        r.expect("fc_2")
    assert r.expect("relu_") == "relu_"  # a failed expect leaves the cursor where it was
    with pytest.raises(DlibFormatError, match="unexpected version 2"):
        r.version(1)


def test_floats_are_mantissa_times_two_to_the_exponent() -> None:
    # 0.1 as float: frexp gives 0.8 * 2**-3; dlib stores mantissa 0.8 * 2**24, exponent -27
    mantissa, exponent = math.frexp(np.float32(0.1))
    m = int(mantissa * 2**24)
    data = _int(m) + _int(-27 + (exponent + 3)) + _int(3) + _int(-1) + _int(1) + _int(32000)
    r = DlibReader(data)
    assert r.float() == pytest.approx(0.1, rel=1e-7)
    assert r.float() == 1.5  # 3 * 2**-1
    assert r.float() == math.inf


def test_tensor_reads_float32_little_endian() -> None:
    values = np.arange(6, dtype="<f4") - 2.5
    data = _int(2) + b"".join(_int(d) for d in (1, 2, 3, 1)) + values.tobytes()
    out = DlibReader(data).tensor()
    assert out.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(out.reshape(-1), values)


def test_truncated_data_names_the_offset() -> None:
    data = _int(2) + b"".join(_int(d) for d in (1, 1, 1, 4)) + b"\x00" * 8
    with pytest.raises(DlibFormatError, match=r"unexpected end of data at byte \d+"):
        DlibReader(data, name="x.dat").tensor()


def test_bad_control_and_bool_bytes() -> None:
    with pytest.raises(DlibFormatError, match="bad integer control byte 0x00"):
        DlibReader(b"\x00").int()
    with pytest.raises(DlibFormatError, match="bad bool byte"):
        DlibReader(b"x").bool()
