"""The integer model as data: layers with packed integer weights, produced from a checkpoint.

Semantics (mirrored by reference.py and engine/bitmcu.c). A convolutional front end (``front``,
CNN models only) runs first, on the raw pixels, one channel at a time:
  conv:  a = requant(sum_k level[c, k] * in[y + k // 3, x + k % 3], shift)   3x3, no padding
  pool:  a = max over 2x2 blocks
  requant(v, s) = min(act_max, (relu(v) + 2^(s-1)) >> s), s fixed per layer (calibrated)
and its flattened outputs (channel-major) are the pixels of the fully connected part:
  a0 = shiftnorm(pixels)                      uint8 pixels, 0 = background
  (bias_unit: a_l gets one more element, max(a_l), before every FC layer)
  acc_l = sum_i level_l[o, i] * a_l[i]        int32 accumulators
  a_{l+1} = shiftnorm(relu(acc_l))            activations 0..act_max (unsigned)
  logits = acc_last, prediction = argmax (first on ties)
shiftnorm(v) = min(act_max, (v + 2^(s-1)) >> s) with the smallest s such that max(v) >> s <= act_max.

A decoder (``latent`` > 0) generates an image from an int8 latent z and a class c:
  a0 = [relu(z), relu(-z), onehot(c) * CLASS_VALUE]      2 * latent + n_classes inputs
  a_{l+1} = requant(acc_l, shift_l)                       every fc layer, fixed shifts
  the last fc layer's outputs are the first map (channels, start, start), channel-major,
  or the image itself when there are no stages; then per stage (StageLayer):
  acc[y, x, k] = sum_i level[k, i] * window(y, x)[i]      window: the 3x3 neighbourhood of
      (y, x) over every input channel, index ci * 9 + dy * 3 + dx, zeros outside the map
  out = requant(acc, shift); ``up`` stages (factor 2) place output k = c * 4 + dy * 2 + dx at
      (c, 2y + dy, 2x + dx) (pixel shuffle); the last stage's outputs are the pixels.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError
from ..core.rng import LATENT_UNIT
from ..quant import get_scheme

MAGIC = 0x554D4942  # "BIMU", also in bitmcu.h
MAX_FRONT = 8  # BITMCU_MAX_FRONT in bitmcu.h: front end layers
FORMAT_VERSION = 7  # BITMCU_FORMAT_VERSION in bitmcu.h (2: 2bitsym rows in fours, 3: binary
#                    rows in eights, 4: depth multipliers, map_bytes, 5: decoders, 6: nbytes,
#                    checksums, the table's end marker, 7: the memory plan's offsets)
INT32_MAX = 2**31 - 1
MAX_DIM = 65535  # uint16 dimensions in the layer table
TERNARY_MAX_IN = 1024  # the ternary kernel divides by 5 with (i * 205) >> 10
CLASS_VALUE = LATENT_UNIT  # a decoder's class input value: 1.0 in latent units
CHUNK_ROWS = 32  # a decoder's last fc layer is computed this many outputs at a time
RING_ROWS = 4  # rows a decoder stage keeps of its input map (all of a map with fewer)


@dataclass
class FCLayer:
    """Fully connected layer: packed codes of an exportable scheme (layout: Scheme.pack)."""

    scheme: str
    n_in: int
    n_out: int
    weights: np.ndarray  # Scheme.packed_shape(n_out, n_in) uint8
    relu: bool  # ShiftNorm + ReLU after this layer (False for the logits layer)
    shift: int | None = None  # decoders: fixed requantization shift (classifiers: ShiftNorm)
    bias: np.ndarray | None = None  # decoders: (n_out,) int8 biases in output units
    op: str = field(default="fc", init=False)

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, relu: bool,
                    shift: int | None = None, bias: np.ndarray | None = None) -> FCLayer:
        sch = get_scheme(scheme)
        levels = np.asarray(levels)
        return cls(sch.name, int(levels.shape[1]), int(levels.shape[0]), sch.pack(levels), relu,
                   shift, bias)

    def levels(self) -> np.ndarray:
        """(n_out, n_in) int32 integer weights."""
        return get_scheme(self.scheme).unpack(self.weights, self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        return int(self.weights.size) + (0 if self.bias is None else int(self.bias.size))

    def accumulator_bound(self, act_max: int) -> int:
        return accumulator_bound(self.levels(), act_max)


def accumulator_bound(levels: np.ndarray, act_max: int) -> int:
    """Largest |accumulator| any input of 0..act_max can produce: max over rows of sum|w|."""
    return int(np.abs(levels.astype(np.int64)).sum(axis=1).max(initial=0)) * act_max


@dataclass
class ConvLayer:
    """3x3 convolution, no padding, per channel: ``conv1`` (1 -> C, the image) or ``dw``
    (depthwise, C/mult -> C: output channel k convolves input channel k // mult).
    Weights: Scheme.pack of the (C, 9) levels."""

    op: str  # "conv1" | "dw"
    scheme: str
    channels: int  # output channels
    side: int  # input side
    shift: int  # requantization shift
    weights: np.ndarray
    mult: int = 1  # dw: output channels per input channel (depth multiplier)

    @classmethod
    def from_levels(cls, op: str, scheme: str, levels: np.ndarray, side: int, shift: int,
                    mult: int = 1):
        sch = get_scheme(scheme)
        levels = np.asarray(levels).reshape(len(levels), 9)
        return cls(op, sch.name, len(levels), side, int(shift), sch.pack(levels), int(mult))

    def levels(self) -> np.ndarray:
        """(C, 9) int32 levels, row-major 3x3 kernels."""
        return get_scheme(self.scheme).unpack(self.weights, self.channels, 9)

    @property
    def out_side(self) -> int:
        return self.side - 2

    def accumulator_bound(self, act_max: int) -> int:
        return accumulator_bound(self.levels(), act_max)

    @property
    def nbytes(self) -> int:
        return int(self.weights.size)


@dataclass
class PoolLayer:
    """2x2 max-pool, stride 2, per channel."""

    channels: int
    side: int  # input side
    op: str = field(default="pool", init=False)
    scheme: str = field(default="", init=False)
    shift: int = field(default=0, init=False)
    mult: int = field(default=1, init=False)

    @property
    def out_side(self) -> int:
        return self.side // 2

    @property
    def nbytes(self) -> int:
        return 0


@dataclass
class StageLayer:
    """A decoder stage: 3x3 convolution (padding 1) over every input channel, computed per
    pixel as an fc layer of the 3x3 window (``c_in * 9`` inputs, ``c_out * factor^2`` rows in
    the scheme's packing); factor 2 places the outputs of each pixel as a 2x2 block of every
    output channel (pixel shuffle)."""

    scheme: str
    c_in: int
    c_out: int  # channels of the output map
    side: int  # input side
    factor: int  # 1 (conv) or 2 (up)
    shift: int
    weights: np.ndarray  # Scheme.packed_shape(c_out * factor^2, c_in * 9)
    bias: np.ndarray  # (c_out * factor^2,) int8 biases in output units

    @property
    def op(self) -> str:
        return "up" if self.factor == 2 else "conv"

    @property
    def n_in(self) -> int:
        return self.c_in * 9

    @property
    def n_out(self) -> int:
        return self.c_out * self.factor * self.factor

    @property
    def out_side(self) -> int:
        return self.side * self.factor

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, c_in: int, side: int, factor: int,
                    shift: int, bias: np.ndarray) -> StageLayer:
        sch = get_scheme(scheme)
        levels = np.asarray(levels).reshape(len(levels), c_in * 9)
        return cls(sch.name, c_in, len(levels) // factor**2, side, factor, int(shift),
                   sch.pack(levels), np.asarray(bias, dtype=np.int8))

    def levels(self) -> np.ndarray:
        """(c_out * factor^2, c_in * 9) int32 levels."""
        return get_scheme(self.scheme).unpack(self.weights, self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        return int(self.weights.size) + int(self.bias.size)

    def accumulator_bound(self, act_max: int) -> int:
        return accumulator_bound(self.levels(), act_max)


def _check_codes(where: str, scheme: str, weights: np.ndarray, levels: np.ndarray) -> None:
    """Refuse packed weights that the scheme's own packing of their levels would not write."""
    sch = get_scheme(scheme)
    try:
        same = bool(np.isin(levels, sch.levels).all()) and np.array_equal(sch.pack(levels), weights)
    except BitmcuError:
        same = False
    if not same:
        raise BitmcuError(f"{where}: packed weights hold codes that {scheme} does not write (a "
                          "damaged or edited model file)")


@dataclass
class IntModel:
    input_size: int  # side of the square uint8 input image
    n_classes: int
    act_max: int  # largest activation value (2^act_bits - 1)
    layers: list[FCLayer]
    config_hash: int  # uint32, from the training config
    name: str = "model"
    front: list = field(default_factory=list)  # ConvLayer | PoolLayer, CNN models only
    bias_unit: bool = False  # each FC layer's last input is the largest of the others
    latent: int = 0  # decoders: latent size (0: a classifier); input_size is the image's side
    stages: list = field(default_factory=list)  # decoders: StageLayer after the fc layers
    latent_scale: int = 0  # decoders: the latent sampler's multiplier (rng.latent_scale)

    @property
    def generative(self) -> bool:
        return self.latent > 0

    @property
    def start(self) -> tuple[int, int]:
        """A decoder's first map (channels, side): the last fc layer's output."""
        if self.stages:
            return self.stages[0].c_in, self.stages[0].side
        return 1, self.input_size

    @property
    def chunk_rows(self) -> int:
        """Outputs of a decoder's last fc layer computed at a time: CHUNK_ROWS, or one image
        row without stages, or all of them where that does not fit the scheme's row groups."""
        last = self.layers[-1]
        chunk = CHUNK_ROWS if self.stages else self.input_size
        if chunk >= last.n_out or chunk % get_scheme(last.scheme).row_group:
            return last.n_out
        return chunk

    @property
    def n_input(self) -> int:
        """Pixels of the input image."""
        return self.input_size * self.input_size

    @property
    def n_features(self) -> int:
        """Inputs of the first fully connected layer."""
        if not self.front:
            return self.n_input
        return self.front[-1].channels * self.front[-1].out_side ** 2

    @property
    def max_map(self) -> int:
        """Largest per-channel feature map the front end writes (bytes)."""
        return max((L.out_side ** 2 for L in self.front), default=0)

    @property
    def max_in(self) -> int:
        if self.generative:
            return max(L.n_in for L in [*self.layers, *self.stages])
        return max([self.n_features] + [L.n_in for L in self.layers])

    @property
    def max_out(self) -> int:
        if self.generative:
            return max([L.n_out for L in self.layers[:-1]] + [self.chunk_rows] +
                       [st.n_out for st in self.stages])
        return max(L.n_out for L in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(L.nbytes for L in [*self.front, *self.layers, *self.stages])

    def validate(self) -> IntModel:
        """Check shapes, schemes, that every packed code is one its scheme writes (the C kernels
        trust them: a ternary byte above 242 reads past the decoding table's meaning) and that
        no int32 accumulator can overflow."""
        if not 1 <= self.act_max <= 255:
            raise BitmcuError(f"activation maximum {self.act_max} must be 1..255 (8-bit)")
        if not self.layers:
            raise BitmcuError("the integer model has no layers")
        if self.generative:
            return self._validate_decoder()
        side, chans = self.input_size, None
        for i, L in enumerate(self.front):
            if L.side != side:
                raise BitmcuError(f"front layer {i} ({L.op}): takes {L.side}x{L.side} maps but "
                                  f"receives {side}x{side}")
            if L.mult < 1 or (L.op != "dw" and L.mult != 1):
                raise BitmcuError(f"front layer {i} ({L.op}): depth multiplier {L.mult} is not "
                                  "allowed (dw layers: >= 1, others: 1)")
            if chans is not None and L.channels != chans * L.mult:
                raise BitmcuError(f"front layer {i} ({L.op}): {L.channels} channels, expected "
                                  f"{chans * L.mult}")
            if (L.op == "conv1") != (i == 0):
                raise BitmcuError(f"front layer {i}: the front end starts with one conv1 layer")
            if L.out_side < 1 or (L.op == "pool" and side % 2):
                raise BitmcuError(f"front layer {i} ({L.op}) cannot take a {side}x{side} map")
            if L.op in ("conv1", "dw"):
                sch = get_scheme(L.scheme)
                if not sch.exportable or L.weights.shape != sch.packed_shape(L.channels, 9):
                    raise BitmcuError(f"front layer {i} ({L.op}): weights of scheme {L.scheme!r}"
                                      f" have shape {L.weights.shape}")
                _check_codes(f"front layer {i} ({L.op})", L.scheme, L.weights, L.levels())
                if not 0 <= L.shift <= 31:
                    raise BitmcuError(f"front layer {i}: shift {L.shift} must be 0..31")
                bound = L.accumulator_bound(self.act_max)
                if bound > INT32_MAX:
                    raise BitmcuError(f"front layer {i}: worst-case accumulator {bound} "
                                      "overflows int32")
            side, chans = L.out_side, L.channels
        if len(self.front) > MAX_FRONT:
            raise BitmcuError(f"the front end has {len(self.front)} layers; the engine takes at "
                              f"most {MAX_FRONT}")
        if self.front and chans * side * side > MAX_DIM:
            raise BitmcuError(f"the front end makes {chans * side * side} "
                              f"features; at most {MAX_DIM}")
        n = self.n_features
        for i, L in enumerate(self.layers):
            sch = get_scheme(L.scheme)
            if not sch.exportable:
                raise BitmcuError(f"layer {i}: scheme {L.scheme!r} (float) cannot be exported; "
                                  "train with a quantized scheme")
            if L.n_in != n + int(self.bias_unit):
                raise BitmcuError(f"layer {i}: takes {L.n_in} inputs but receives "
                                  f"{n + int(self.bias_unit)}")
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
            _check_codes(f"layer {i}", L.scheme, L.weights, L.levels())
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

    def _validate_decoder(self) -> IntModel:
        if self.front or self.bias_unit:
            raise BitmcuError("a decoder has no convolutional front end and no bias unit")
        if not 1 <= self.latent_scale <= 255:
            raise BitmcuError(f"latent scale {self.latent_scale} must be 1..255")
        c0, s0 = self.start
        n = 2 * self.latent + self.n_classes
        for i, L in enumerate(self.layers):
            want_out = c0 * s0 * s0 if i == len(self.layers) - 1 else L.n_out
            self._check_weights(f"layer {i}", L, n, want_out)
            if L.shift is None or not L.relu:
                raise BitmcuError(f"layer {i}: a decoder's fc layers requantize by a fixed shift")
            n = L.n_out
        side, chans = s0, c0
        for i, st in enumerate(self.stages):
            if st.factor not in (1, 2) or st.side != side or st.c_in != chans:
                raise BitmcuError(f"stage {i}: takes {st.c_in} channels of {st.side}x{st.side} "
                                  f"(factor {st.factor}) but receives {chans} of {side}x{side}")
            self._check_weights(f"stage {i}", st, st.n_in, st.n_out)
            side, chans = st.out_side, st.c_out
        if (chans, side) != (1, self.input_size):
            raise BitmcuError(f"the decoder makes {chans} channel(s) of {side}x{side}, not one "
                              f"image of {self.input_size}x{self.input_size}")
        if not self.stages:
            raise BitmcuError("a decoder needs at least one stage after its fc layers")
        return self

    def _check_weights(self, where: str, L, n_in: int, n_out: int) -> None:
        """A decoder layer's scheme, shape, codes, shift and accumulator bound."""
        sch = get_scheme(L.scheme)
        if not sch.exportable:
            raise BitmcuError(f"{where}: scheme {L.scheme!r} (float) cannot be exported")
        if L.n_in != n_in or L.n_out != n_out or max(n_in, n_out) > MAX_DIM:
            raise BitmcuError(f"{where}: {L.n_out}x{L.n_in}, expected {n_out}x{n_in}")
        if sch.name == "ternary" and n_in > TERNARY_MAX_IN:
            raise BitmcuError(f"{where}: ternary layers take at most {TERNARY_MAX_IN} inputs")
        shape = sch.packed_shape(n_out, n_in)
        if L.weights.dtype != np.uint8 or L.weights.shape != shape:
            raise BitmcuError(f"{where}: packed weights have shape {L.weights.shape}, "
                              f"expected {shape} uint8")
        _check_codes(where, L.scheme, L.weights, L.levels())
        if L.bias is None or L.bias.dtype != np.int8 or L.bias.shape != (n_out,):
            raise BitmcuError(f"{where}: a decoder layer needs ({n_out},) int8 biases")
        if not 0 <= L.shift <= 31:
            raise BitmcuError(f"{where}: shift {L.shift} must be 0..31")
        bound = L.accumulator_bound(self.act_max)
        if bound > INT32_MAX:
            raise BitmcuError(f"{where}: worst-case accumulator {bound} overflows int32")

    # ---------------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        meta = {"format": "bitmcu-ir", "format_version": FORMAT_VERSION, "name": self.name,
                "input_size": self.input_size, "n_classes": self.n_classes,
                "act_max": self.act_max, "config_hash": self.config_hash,
                "bias_unit": self.bias_unit, "latent": self.latent,
                "latent_scale": self.latent_scale,
                "layers": [{"op": L.op, "scheme": L.scheme, "n_in": L.n_in, "n_out": L.n_out,
                            "relu": L.relu, "shift": L.shift} for L in self.layers],
                "stages": [{"scheme": st.scheme, "c_in": st.c_in, "c_out": st.c_out,
                            "side": st.side, "factor": st.factor, "shift": st.shift}
                           for st in self.stages],
                "front": [{"op": L.op, "scheme": L.scheme, "channels": L.channels,
                           "side": L.side, "shift": L.shift, "mult": L.mult}
                          for L in self.front]}
        conv_w = {f"f{i}": L.weights for i, L in enumerate(self.front) if L.op != "pool"}
        conv_w.update({f"s{i}": st.weights for i, st in enumerate(self.stages)})
        conv_w.update({f"sb{i}": st.bias for i, st in enumerate(self.stages)})
        conv_w.update({f"b{i}": L.bias for i, L in enumerate(self.layers) if L.bias is not None})
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                 **{f"w{i}": L.weights for i, L in enumerate(self.layers)}, **conv_w)
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
                front = [PoolLayer(m["channels"], m["side"]) if m["op"] == "pool" else
                         ConvLayer(m["op"], m["scheme"], m["channels"], m["side"], m["shift"],
                                   z[f"f{i}"], m.get("mult", 1))
                         for i, m in enumerate(meta.get("front", []))]
                stages = [StageLayer(m["scheme"], m["c_in"], m["c_out"], m["side"], m["factor"],
                                     m["shift"], z[f"s{i}"], z[f"sb{i}"])
                          for i, m in enumerate(meta.get("stages", []))]
                biases = [z[f"b{i}"] if f"b{i}" in z.files else None
                          for i in range(len(meta["layers"]))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise BitmcuError(f"{path}: not a readable bitmcu integer model, truncated or "
                              f"changed ({e}); re-run `bitmcu export`") from None
        if meta.get("format") != "bitmcu-ir" or meta.get("format_version") != FORMAT_VERSION:
            raise BitmcuError(f"{path}: not a bitmcu integer model of format {FORMAT_VERSION}")
        layers = [FCLayer(m["scheme"], m["n_in"], m["n_out"], w, m["relu"], m.get("shift"), b)
                  for m, w, b in zip(meta["layers"], weights, biases, strict=True)]
        return cls(meta["input_size"], meta["n_classes"], meta["act_max"], layers,
                   meta["config_hash"], meta.get("name", "model"), front,
                   bool(meta.get("bias_unit", False)), meta.get("latent", 0), stages,
                   meta.get("latent_scale", 0)).validate()
