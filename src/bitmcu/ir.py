"""The integer model as data: layers with packed integer weights, produced from a checkpoint.

Semantics (mirrored by reference.py and csrc/bitmcu.c):
  a0 = shiftnorm(pixels)                      uint8 pixels, 0 = background
  acc_l = sum_i level_l[o, i] * a_l[i]        int32 accumulators
  a_{l+1} = shiftnorm(relu(acc_l))            activations 0..act_max (unsigned)
  logits = acc_last, prediction = argmax (first on ties)
shiftnorm(v) = min(act_max, (v + 2^(s-1)) >> s) with the smallest s such that max(v) >> s <= act_max.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BitmcuError
from .quant import get_scheme

MAGIC = 0x554D4942  # "BIMU", also in bitmcu.h
FORMAT_VERSION = 1  # BITMCU_FORMAT_VERSION in bitmcu.h
INT32_MAX = 2**31 - 1
MAX_DIM = 65535  # uint16 dimensions in the layer table
TERNARY_MAX_IN = 1024  # the ternary kernel divides by 5 with (i * 205) >> 10


@dataclass
class FCLayer:
    """Fully connected layer: packed codes of an exportable scheme (layout: Scheme.pack)."""

    scheme: str
    n_in: int
    n_out: int
    weights: np.ndarray  # Scheme.packed_shape(n_out, n_in) uint8
    relu: bool  # ShiftNorm + ReLU after this layer (False for the logits layer)
    op: str = field(default="fc", init=False)

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, relu: bool) -> FCLayer:
        sch = get_scheme(scheme)
        levels = np.asarray(levels)
        return cls(sch.name, int(levels.shape[1]), int(levels.shape[0]), sch.pack(levels), relu)

    def levels(self) -> np.ndarray:
        """(n_out, n_in) int32 integer weights."""
        return get_scheme(self.scheme).unpack(self.weights, self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        return int(self.weights.size)

    def accumulator_bound(self, act_max: int) -> int:
        """Largest |accumulator| any input can produce: max over rows of sum|w| * act_max."""
        return int(np.abs(self.levels().astype(np.int64)).sum(axis=1).max(initial=0)) * act_max


@dataclass
class IntModel:
    input_size: int  # side of the square uint8 input image
    n_classes: int
    act_max: int  # largest activation value (2^act_bits - 1)
    layers: list[FCLayer]
    config_hash: int  # uint32, from the training config
    name: str = "model"

    @property
    def n_input(self) -> int:
        return self.input_size * self.input_size

    @property
    def max_in(self) -> int:
        return max([self.n_input] + [L.n_in for L in self.layers])

    @property
    def max_out(self) -> int:
        return max(L.n_out for L in self.layers)

    @property
    def arena_words(self) -> int:
        """int32 words: max_out accumulators + a nonzero list of 2 bytes per input."""
        return self.max_out + (self.max_in + 1) // 2

    @property
    def weight_bytes(self) -> int:
        return sum(L.nbytes for L in self.layers)

    def validate(self) -> IntModel:
        """Check shapes, schemes and that no int32 accumulator can overflow."""
        if not 1 <= self.act_max <= 255:
            raise BitmcuError(f"activation maximum {self.act_max} must be 1..255 (8-bit)")
        if not self.layers:
            raise BitmcuError("the integer model has no layers")
        n = self.n_input
        for i, L in enumerate(self.layers):
            sch = get_scheme(L.scheme)
            if not sch.exportable:
                raise BitmcuError(f"layer {i}: scheme {L.scheme!r} (float) cannot be exported; "
                                  "train with a quantized scheme")
            if L.n_in != n:
                raise BitmcuError(f"layer {i}: takes {L.n_in} inputs but receives {n}")
            if max(L.n_in, L.n_out) > MAX_DIM:
                raise BitmcuError(f"layer {i}: {L.n_out}x{L.n_in} exceeds the engine's "
                                  f"{MAX_DIM} limit per dimension")
            if sch.name == "ternary" and L.n_in > TERNARY_MAX_IN:
                raise BitmcuError(f"layer {i}: ternary layers take at most {TERNARY_MAX_IN} "
                                  f"inputs, this one has {L.n_in}")
            shape = sch.packed_shape(L.n_out, L.n_in)
            if L.weights.dtype != np.uint8 or L.weights.shape != shape:
                raise BitmcuError(f"layer {i}: packed weights have shape {L.weights.shape}, "
                                  f"expected {shape} uint8")
            if L.relu != (i < len(self.layers) - 1):
                raise BitmcuError(f"layer {i}: only the last layer may skip ShiftNorm+ReLU")
            bound = L.accumulator_bound(self.act_max)
            if bound > INT32_MAX:
                raise BitmcuError(
                    f"layer {i} ({L.scheme}, {L.n_out}x{L.n_in}): worst-case accumulator "
                    f"{bound} overflows int32 (max {INT32_MAX}); use fewer inputs, smaller "
                    "weights or fewer activation bits"
                )
            n = L.n_out
        if n != self.n_classes:
            raise BitmcuError(f"last layer has {n} outputs but the model has {self.n_classes} classes")
        return self

    # ---------------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        meta = {"format": "bitmcu-ir", "format_version": FORMAT_VERSION, "name": self.name,
                "input_size": self.input_size, "n_classes": self.n_classes,
                "act_max": self.act_max, "config_hash": self.config_hash,
                "layers": [{"op": L.op, "scheme": L.scheme, "n_in": L.n_in, "n_out": L.n_out,
                            "relu": L.relu} for L in self.layers]}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 **{f"w{i}": L.weights for i, L in enumerate(self.layers)})
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> IntModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                weights = [z[f"w{i}"] for i in range(len(meta["layers"]))]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise BitmcuError(f"{path}: not a readable bitmcu integer model ({e})") from None
        if meta.get("format") != "bitmcu-ir" or meta.get("format_version") != FORMAT_VERSION:
            raise BitmcuError(f"{path}: not a bitmcu integer model of format {FORMAT_VERSION}")
        layers = [FCLayer(m["scheme"], m["n_in"], m["n_out"], w, m["relu"])
                  for m, w in zip(meta["layers"], weights, strict=True)]
        return cls(meta["input_size"], meta["n_classes"], meta["act_max"], layers,
                   meta["config_hash"], meta.get("name", "model")).validate()


def from_checkpoint(blob: dict) -> IntModel:
    """Checkpoint (as loaded by train.load_checkpoint) -> validated integer model."""
    from .train.checkpoint import model_from_checkpoint

    cfg = blob["cfg"]
    where = blob["path"]
    if cfg.model.family != "fc":
        raise BitmcuError(f"{where}: model family {cfg.model.family!r} cannot be exported yet")
    if cfg.model.norm != "rms":
        raise BitmcuError(f"{where}: export needs model.norm='rms' (folded into ShiftNorm); "
                          f"this run uses {cfg.model.norm!r}")
    if cfg.model.bias:
        raise BitmcuError(f"{where}: export needs model.bias=false; this run has biases")
    if cfg.model.scale != "per_tensor":
        raise BitmcuError(f"{where}: export needs model.scale='per_tensor'; this run uses "
                          f"{cfg.model.scale!r}")
    for i, s in enumerate(cfg.layer_scheme_names(len(cfg.model.hidden) + 1)):
        if not get_scheme(s).exportable:
            raise BitmcuError(f"{where}: layer {i} uses scheme {s!r} (float), which cannot be "
                              "exported; train with a quantized scheme")
    model = model_from_checkpoint(blob)
    n = len(model.layers)
    layers = [FCLayer.from_levels(L.scheme.name, L.integer_weight().numpy(), relu=i < n - 1)
              for i, L in enumerate(model.layers)]
    return IntModel(cfg.data.size, blob["n_classes"], act_max_for(cfg.model.act_bits), layers,
                    zlib.crc32(cfg.hash().encode()), cfg.name).validate()


def act_max_for(bits: int) -> int:
    """Activations after ReLU are unsigned: act_bits bits hold 0..2^bits - 1."""
    return (1 << bits) - 1
