"""Reader for IDX files (the MNIST family's format), gzip-compressed or raw, with header checks."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise BitmcuError(f"{name}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise BitmcuError(f"{name}: IDX data type 0x{code:02x} is not one of the defined types")
    if ndim == 0:
        raise BitmcuError(f"{name}: IDX file with zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BitmcuError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = header + math.prod(shape) * dtype.itemsize  # no overflow
    if len(raw) != expected:
        raise BitmcuError(
            f"{name}: IDX size mismatch: header says {shape} ({expected} bytes), file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise BitmcuError(f"{path}: corrupted gzip file ({e})") from None
    return read_idx_bytes(raw, str(path))
