"""The weight schemes.

Every scheme maps a float weight to one of a small set of *integer levels* (``levels``); the
integer model multiplies activations by exactly these integers, so training, the numpy reference
and the C engine agree by construction. A scheme also defines its storage code (``encode`` /
``decode``) and packing into bytes (``pack`` / ``unpack``), mirrored by its C kernel.

| scheme          | levels                         | bits | C kernel            |
|-----------------|--------------------------------|------|---------------------|
| binary          | -1, +1                         | 1    | fc_binary           |
| binary_balanced | -1, +1 (mean removed first)    | 1    | fc_binary           |
| ternary         | -1, 0, +1 (5 trits per byte)   | 1.6  | fc_ternary          |
| 2bitsym         | -3, -1, +1, +3                 | 2    | fc_2bitsym          |
| 4bitsym         | odd -15..+15                   | 4    | fc_4bitsym          |
| 4bit            | -7..+7 (ones' complement)      | 4    | fc_4bit             |
| fp130           | +-2^e, e = 0..7 (shifts only)  | 4    | fc_fp130            |
| nf4             | NormalFloat4 table * 127       | 4    | fc_nf4              |
| 8bit            | -127..+127                     | 8    | fc_8bit             |
| none            | float (training only)          | 32   | -                   |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..core.errors import BitmcuError, choices

if TYPE_CHECKING:  # the training methods import torch; deploying needs numpy alone
    import torch

REGISTRY: dict[str, type[Scheme]] = {}


class Scheme:
    """One weight quantization scheme. Subclasses set the class attributes and register."""

    name: ClassVar[str]
    id: ClassVar[int]  # stable numeric id, written into model.h; never reuse one
    bits: ClassVar[int]  # storage bits per weight (ternary: 8 bits per 5 weights)
    levels: ClassVar[tuple[int, ...]]  # sorted integer levels
    c_kernel: ClassVar[str | None]
    row_group: ClassVar[int] = 1  # rows that share their packed bytes (interleaved rows)
    centered: ClassVar[bool] = False  # quantize w - mean(w) (BinaryBalanced)
    exportable: ClassVar[bool] = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name in REGISTRY:
            raise RuntimeError(f"duplicate scheme name {cls.name}")
        if any(c.id == cls.id for c in REGISTRY.values()):
            raise RuntimeError(f"duplicate scheme id {cls.id}")
        REGISTRY[cls.name] = cls

    # ------------------------------------------------------------------ training
    @classmethod
    def n_levels(cls) -> int:
        return len(cls.levels)

    @classmethod
    def max_level(cls) -> int:
        return max(abs(v) for v in cls.levels)

    @classmethod
    def quantize_int(cls, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Nearest integer level of ``w / step`` (no gradient)."""
        import torch

        lv = torch.tensor(cls.levels, dtype=w.dtype, device=w.device)
        mids = (lv[1:] + lv[:-1]) / 2
        idx = torch.bucketize((w / step).contiguous(), mids)
        return lv[idx]

    @classmethod
    def fake_quant(cls, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize with the straight-through estimator."""
        if cls.centered:
            w = w - w.mean(dim=-1, keepdim=True)
        q = cls.quantize_int(w.detach(), step) * step
        return w + (q - w).detach()

    # ------------------------------------------------------------------ storage
    @classmethod
    def encode(cls, q: np.ndarray) -> np.ndarray:
        """Integer levels -> storage codes (default: index into ``levels``)."""
        lv = np.asarray(cls.levels)
        idx = np.searchsorted(lv, q)
        idx = np.clip(idx, 0, len(lv) - 1)
        if not np.array_equal(lv[idx], q):
            bad = np.asarray(q)[lv[idx] != q].flat[0]
            raise BitmcuError(f"weight {bad} is not a level of scheme {cls.name}")
        return idx.astype(np.uint8)

    @classmethod
    def decode(cls, codes: np.ndarray) -> np.ndarray:
        return np.asarray(cls.levels, dtype=np.int32)[codes]

    @classmethod
    def row_bytes(cls, n_in: int) -> int:
        per_byte = 8 // cls.bits
        return -(-n_in // per_byte)

    @classmethod
    def pack(cls, q: np.ndarray) -> np.ndarray:
        """(out, in) integer levels -> (out, row_bytes) uint8; codes LSB-first within a byte."""
        codes = cls.encode(np.asarray(q, dtype=np.int32))
        out, n_in = codes.shape
        per_byte = 8 // cls.bits
        padded = np.zeros((out, cls.row_bytes(n_in) * per_byte), dtype=np.uint32)
        padded[:, :n_in] = codes
        padded = padded.reshape(out, -1, per_byte)
        shifts = (np.arange(per_byte) * cls.bits).astype(np.uint32)
        return (padded << shifts).sum(axis=2).astype(np.uint8)

    @classmethod
    def packed_shape(cls, n_out: int, n_in: int) -> tuple[int, int]:
        """Shape of the packed uint8 weights; dimension 1 is the C layer table's row_bytes."""
        return (n_out, cls.row_bytes(n_in))

    @classmethod
    def unpack(cls, packed: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
        per_byte = 8 // cls.bits
        shifts = (np.arange(per_byte) * cls.bits).astype(np.uint8)
        mask = (1 << cls.bits) - 1
        codes = (packed[:, :, None] >> shifts) & mask
        codes = codes.reshape(packed.shape[0], -1)[:, :n_in]
        return cls.decode(codes)

    @classmethod
    def weight_bytes(cls, n_out: int, n_in: int) -> int:
        a, b = cls.packed_shape(n_out, n_in)
        return a * b


def get_scheme(name: str, key: str = "scheme") -> type[Scheme]:
    try:
        return REGISTRY[name.lower()]
    except (KeyError, AttributeError):
        raise BitmcuError(
            f"{key}: unknown weight scheme {name!r}; use {choices(scheme_names())}"
        ) from None


def scheme_names() -> list[str]:
    return list(REGISTRY)


# ---------------------------------------------------------------------------- schemes


class InterleavedRows:
    """Layout of the schemes whose C kernel feeds several output rows from one byte load: the
    8 // bits rows of group g share a byte per input, row g * (8 // bits) + k's code for input
    j in bits k * bits .. (k + 1) * bits - 1 of byte j (missing last rows get code 0).
    Packed shape: (ceil(n_out / (8 // bits)), n_in)."""

    @classmethod
    def packed_shape(cls, n_out, n_in):
        return (-(-n_out // (8 // cls.bits)), n_in)

    @classmethod
    def pack(cls, q):
        codes = cls.encode(np.asarray(q, dtype=np.int32))
        n_out, n_in = codes.shape
        group = 8 // cls.bits
        padded = np.zeros((group * cls.packed_shape(n_out, n_in)[0], n_in), dtype=np.uint8)
        padded[:n_out] = codes
        packed = np.zeros(cls.packed_shape(n_out, n_in), dtype=np.uint8)
        for k in range(group):
            packed |= padded[k::group] << (k * cls.bits)
        return packed

    @classmethod
    def unpack(cls, packed, n_out, n_in):
        group, mask = 8 // cls.bits, (1 << cls.bits) - 1
        codes = np.empty((group * packed.shape[0], n_in), dtype=np.uint8)
        for k in range(group):
            codes[k::group] = (packed >> (k * cls.bits)) & mask
        return cls.decode(codes[:n_out])


class Binary(InterleavedRows, Scheme):
    """Sign of the weight: -1 or +1 (code bit 1 = +1). Rows interleaved in eights
    (:class:`InterleavedRows`): bit k of byte j of group g is row 8g + k's code for input j."""

    name, id, bits, levels, c_kernel = "binary", 1, 1, (-1, 1), "fc_binary"
    row_group = 8


class BinaryBalanced(Binary):
    """Binary with the row mean removed before the sign, so +1 and -1 are used about equally."""

    name, id = "binary_balanced", 2
    centered = True


class Ternary(Scheme):
    """-1, 0, +1 (1.58 bits), packed 5 trits per byte in base 3 (1.6 bits per weight)."""

    name, id, bits, levels, c_kernel = "ternary", 3, 2, (-1, 0, 1), "fc_ternary"

    @classmethod
    def row_bytes(cls, n_in: int) -> int:
        return -(-n_in // 5)

    @classmethod
    def pack(cls, q: np.ndarray) -> np.ndarray:
        codes = cls.encode(np.asarray(q, dtype=np.int32)).astype(np.uint32)  # trit = level + 1
        out, n_in = codes.shape
        padded = np.ones((out, cls.row_bytes(n_in) * 5), dtype=np.uint32)  # pad with level 0
        padded[:, :n_in] = codes
        padded = padded.reshape(out, -1, 5)
        return (padded * np.array([1, 3, 9, 27, 81], dtype=np.uint32)).sum(axis=2).astype(np.uint8)

    @classmethod
    def unpack(cls, packed: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
        p = packed.astype(np.int32)[:, :, None]
        codes = (p // np.array([1, 3, 9, 27, 81])) % 3
        return cls.decode(codes.reshape(packed.shape[0], -1)[:, :n_in])


class TwoBitSym(InterleavedRows, Scheme):
    """Four symmetric levels without zero: -3, -1, +1, +3 (code c -> 2c - 3). Rows interleaved
    in fours (:class:`InterleavedRows`)."""

    name, id, bits, levels, c_kernel = "2bitsym", 4, 2, (-3, -1, 1, 3), "fc_2bitsym"
    row_group = 4


class FourBitSym(InterleavedRows, Scheme):
    """Sixteen symmetric levels without zero: odd -15..+15 (code c -> 2c - 15). Rows interleaved
    in pairs (:class:`InterleavedRows`): low nibble row 2p, high nibble row 2p + 1."""

    name, id, bits, c_kernel = "4bitsym", 5, 4, "fc_4bitsym"
    row_group = 2
    levels = tuple(range(-15, 16, 2))


class FourBit(Scheme):
    """Ones' complement with zero: -7..+7; code = sign << 3 | magnitude (for multipliers)."""

    name, id, bits, c_kernel = "4bit", 6, 4, "fc_4bit"
    levels = tuple(range(-7, 8))

    @classmethod
    def encode(cls, q):
        super().encode(q)  # range check
        return (np.where(q < 0, 8, 0) | np.abs(q)).astype(np.uint8)

    @classmethod
    def decode(cls, codes):
        m = (codes & 7).astype(np.int32)
        return np.where(codes & 8, -m, m)


class FP130(Scheme):
    """Sign and 3-bit power-of-two exponent: +-1, +-2, ... +-128; code = sign << 3 | exponent."""

    name, id, bits, c_kernel = "fp130", 7, 4, "fc_fp130"
    levels = tuple([-(1 << e) for e in range(7, -1, -1)] + [1 << e for e in range(8)])

    @classmethod
    def quantize_int(cls, w, step):
        # nearest level in the log domain (geometric midpoints), as a power-of-two format should
        import torch

        x = w / step
        e = torch.log2(x.abs().clamp_min(1.0)).round().clamp(0, 7)
        return torch.where(x < 0, -1.0, 1.0).to(w.dtype) * torch.exp2(e)

    @classmethod
    def encode(cls, q):
        super().encode(q)
        e = np.log2(np.abs(q)).astype(np.uint8)  # exact for powers of two
        return (np.where(q < 0, 8, 0) | e).astype(np.uint8)

    @classmethod
    def decode(cls, codes):
        m = (1 << (codes & 7)).astype(np.int32)
        return np.where(codes & 8, -m, m)


class NF4(Scheme):
    """NormalFloat4 (QLoRA): 16 quantiles of a normal distribution, as int8 (x127) table values."""

    name, id, bits, c_kernel = "nf4", 8, 4, "fc_nf4"
    levels = (-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127)


class EightBit(Scheme):
    """Symmetric 8-bit: -127..+127, stored as int8."""

    name, id, bits, c_kernel = "8bit", 9, 8, "fc_8bit"
    levels = tuple(range(-127, 128))

    @classmethod
    def quantize_int(cls, w, step):
        return (w / step).round().clamp(-127, 127)

    @classmethod
    def encode(cls, q):
        q = np.asarray(q)
        if q.min(initial=0) < -127 or q.max(initial=0) > 127:
            raise BitmcuError("8bit weights must lie in -127..127")
        return q.astype(np.int8).view(np.uint8)

    @classmethod
    def decode(cls, codes):
        return np.asarray(codes, dtype=np.uint8).view(np.int8).astype(np.int32)


class NoQuant(Scheme):
    """Float weights (training baselines only; cannot be exported)."""

    name, id, bits, levels, c_kernel = "none", 0, 32, (), None
    exportable = False

    @classmethod
    def fake_quant(cls, w, step):
        return w
