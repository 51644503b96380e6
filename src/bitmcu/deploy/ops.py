"""The integer model's ops: one class per op, registered by name like the weight schemes.

A model is one sequence of ops (``IntModel.ops``); each op takes the value the one before it
makes. Values (:class:`Shape`):

  map   uint8 maps, ``n`` channels of ``side`` x ``side``, channel-major (an image: one channel)
  act   a vector of ``n`` activations 0..act_max
  acc   a vector of ``n`` int32 accumulators (a classifier's logits)
  token one token of ``n`` (a text model's input and output)

Each op gives its shape (``out``) and checks (``check``), its numpy reference (``forward``, on
a batch), the arena buffer its output needs (``buffer``: the memory plan places it), its row of
the C layer table and the name of the C function that runs it (``row``, ``step``; no row for
the inputs, which the entry points set up, nor for the ShiftNorm of the features, which the
first fc layer's function does), and its fields in the model file (``meta``, ``arrays``,
``from_meta``).

Semantics (mirrored by engine/bitmcu.c):
  pixels   the uint8 image, one map
  conv1    a = requant(sum_k level[c, k] * in[y + k // 3, x + k % 3], shift)   3x3, no padding,
           1 -> C channels; requant(v, s) = min(act_max, (relu(v) + 2^(s-1)) >> s)
  dw       the same per channel, C/mult -> C: output channel k convolves input channel k // mult
  pool     max over 2x2 blocks, per channel
  norm     the map, flattened channel-major, -> shiftnorm(v) = min(act_max, (v + 2^(s-1)) >> s)
           with the smallest s such that max(v) >> s <= act_max
  fc       (bias_unit: the input gets one more element, max(input))
           acc = sum_i level[o, i] * a[i]; then, without a fixed shift, shiftnorm(relu(acc))
           (``relu``) or the accumulators themselves (the logits, argmax = the prediction, first
           on ties); with a fixed shift s and int8 biases b (decoders):
           clamp(((acc + 2^(s-1)) >> s) + b, 0, act_max), >> arithmetic
  latent   an int8 latent z and a class c -> [relu(z), relu(-z), onehot(c) * CLASS_VALUE]
  stage    acc[y, x, k] = sum_i level[k, i] * window(y, x)[i], the window the 3x3 neighbourhood
           of (y, x) over every input channel, index ci * 9 + dy * 3 + dx, zeros outside the
           map; out = clamp(((acc + 2^(s-1)) >> s) + b, 0, act_max); factor 2 places output
           k = c * 4 + dy * 2 + dx at (c, 2y + dy, 2x + dx) (pixel shuffle). A stage takes a
           map, or the vector an fc layer makes as the map (c_in, side, side).
  tokens   a text model's input, one token per step: the one read (END, token 0, first)
  embed    table[token]: a row of activations 0..act_max
  cell     h' = clamp(((sum_i level[o, i] * [x, h][i] + 2^(s-1)) >> s) + b[o], 0, act_max), x
           the op before's output, h the cell's own output of the step before (zeros before a
           line), kept in its buffer from step to step (an Elman cell with a clamped ReLU)
  sample   the next token from the logits (acc): d_i = (max(acc) - acc_i) >> shift, w_i =
           table[d_i] (0 beyond it), r the top k bits of the next xorshift32 word (k the bit
           length of sum(w) - 1; drawn again while r >= sum(w)), the token the first i with
           w_0 + .. + w_i > r; table = round(65535 exp(-nats * mid(d) / temperature))

The C engine runs three sequences (:data:`ENGINE_RUNS`): a classifier (``bitmcu_run``), a
decoder (``bitmcu_generate``) and a text model (``bitmcu_text_step``, once per token);
``IntModel.validate`` refuses any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..core.errors import BitmcuError
from ..core.rng import (
    LATENT_UNIT,
    MIXTURE,
    UNIFORM,
    describe_scale,
    sample_latent,
    sample_mixture,
    seed_state,
)
from ..quant import get_scheme
from . import reference

if TYPE_CHECKING:
    from .ir import IntModel

INT32_MAX = reference.INT32_MAX
MAX_DIM = 65535  # uint16 dimensions in the layer table
TERNARY_MAX_IN = 1024  # the ternary kernel divides by 5 with (i * 205) >> 10
CLASS_VALUE = LATENT_UNIT  # a decoder's class input value: 1.0 in latent units
CHUNK_ROWS = 32  # a decoder's last fc layer is computed this many outputs at a time
RING_ROWS = 4  # rows a decoder stage keeps of its input map (all of a map with fewer)
MAX_FRONT = 8  # BITMCU_MAX_FRONT in bitmcu.h: map ops before the fc layers
MAX_COMPONENTS = 255  # a mixture prior's components per class at most
MAX_TOKENS = 96  # a text model's vocabulary at most (data/text.py MAX_VOCAB)
MAX_EXP_TABLE = 255  # the sampler's exp table: entries at most
EXP_STEP = 1 / 16  # nats (after the temperature) per entry of the exp table at most
EXP_ONE = 65535  # the exp table's first entry's scale

# The op sequences the C engine runs, over the ops' tokens (Op.token), and how to say them
ENGINE_RUNS = {
    "pixels": (r"pixels (conv1( dw| pool)* )?norm( fc)* logits",
               "pixels, then optionally conv1 followed by dw and pool ops, norm, fc layers, "
               "and a last fc layer without ReLU (the logits)"),
    "latent": (r"latent( fcq)+( stage)+",
               "latent, fc layers with fixed shifts and biases, then stages"),
    "tokens": (r"tokens embed( cell)+ logits sample",
               "tokens, embed, recurrent cells, the logits (an fc layer without ReLU), sample"),
}


@dataclass(frozen=True)
class Shape:
    """The value between two ops: kind map (n channels of side x side), act or acc (n values)."""

    kind: str
    n: int
    side: int = 1

    @property
    def size(self) -> int:
        return self.n * self.side * self.side

    def __str__(self) -> str:
        return f"{self.n}x{self.side}x{self.side}" if self.kind == "map" else str(self.n)


@dataclass(frozen=True)
class TableRow:
    """One entry of the C layer table, as numbers (the checksum's) and the array it points at."""

    op: str  # the C op: fc | conv1 | dw | pool | stage
    scheme: str | None  # None for pool
    # the op's six parameters (Op.params names them; the checksum covers them in this order)
    relu: int
    shift: int
    n_in: int
    n_out: int
    row_bytes: int
    mult: int
    array: np.ndarray | None  # the layer's weight array (a decoder's biases, then its codes)
    offset: int  # where in `array` the table's weights pointer points (a decoder's n_out)
    comment: str
    buf: int = 0  # byte offset of the layer's output buffer in the arena (the plan's)

    @property
    def nbytes(self) -> int:
        """Bytes of its weight array (the table's nbytes)."""
        return 0 if self.array is None else int(self.array.size)


OPS: dict[str, type[Op]] = {}  # IR op name -> class


def register(*names: str):
    def deco(cls):
        for n in names:
            OPS[n] = cls
        return cls
    return deco


class Op:
    """An op of the integer model (see the module's docstring for each op's semantics)."""

    # the C op (bitmcu_op in bitmcu.h, BITMCU_OP_<name upper>); None: no table row
    c_op: ClassVar[str | None] = None
    # the C function that runs it (bitmcu_step_fn in bitmcu.h; a macro-op's on each of its rows)
    c_step: ClassVar[str] = ""
    # its parameter struct (bitmcu_layer.p.<struct>) and fields, in TableRow's order
    params: ClassVar[tuple[str, tuple[str, ...]]] = ("", ())

    def step(self, m: IntModel) -> str:
        """The C function that runs this op in model ``m`` (a row's ``.step``)."""
        return self.c_step

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def token(self) -> str:
        """The op's word in ENGINE_RUNS."""
        return self.name

    @property
    def nbytes(self) -> int:
        return 0

    def out(self, x: Shape | None, m: IntModel) -> Shape:
        """The value this op makes of ``x`` (assumes ``check`` passed)."""
        raise NotImplementedError

    def check(self, x: Shape | None, m: IntModel, where: str) -> None:
        """Refuse an input this op cannot take, or parameters the engine cannot run."""

    def forward(self, a, m: IntModel):
        raise NotImplementedError

    def buffer(self, m: IntModel, i: int) -> tuple[str, int]:
        """The arena buffer op ``i``'s output needs: (kind, bytes); kind "" for none. Kinds (the
        plan's, deploy/plan.py): turn, kept (maps), feat, ring, band, scratch."""
        return "", 0

    def acc_rows(self, m: IntModel, i: int) -> int:
        """int32 accumulators op ``i`` needs at once."""
        return 0

    def nz_inputs(self, m: IntModel, i: int) -> int:
        """Entries of the nonzero list op ``i``'s inputs need."""
        return 0

    def row(self, m: IntModel, i: int) -> TableRow | None:
        return None

    def kernel_work(self) -> dict[str, int]:
        """The engine's table-driven kernels this op runs (C function names) and how many
        values each goes through: what decides which kernels are worth keeping in SRAM. The
        front end's map ops are one function, counted apart (firmware.hot_kernels)."""
        return {}

    def describe(self, x: Shape, y: Shape) -> tuple[str, str | int, str | int]:
        """(label, input, output) for the export report, given the values it takes and makes."""
        return self.name, str(x), str(y)

    def c_tables(self, m: IntModel) -> str:
        """C arrays of model.h besides the layer table's (an input op's)."""
        return ""

    def tables_sum(self) -> int:
        """The checksum C computes of :meth:`c_tables`'s arrays (0: none, or none checked)."""
        return 0

    def meta(self) -> dict:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def from_meta(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Op:
        raise NotImplementedError


def accumulator_bound(levels: np.ndarray, act_max: int) -> int:
    """Largest |accumulator| any input of 0..act_max can produce: max over rows of sum|w|."""
    return int(np.abs(levels.astype(np.int64)).sum(axis=1).max(initial=0)) * act_max


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


class Weighted(Op):
    """An op with packed weights of one scheme (layout: Scheme.pack of (rows, cols) levels)."""

    weights: np.ndarray

    @property
    def rows_cols(self) -> tuple[int, int]:
        raise NotImplementedError

    def levels(self) -> np.ndarray:
        """(rows, cols) int32 integer weights."""
        return get_scheme(self.scheme).unpack(self.weights, *self.rows_cols)

    def accumulator_bound(self, act_max: int) -> int:
        return accumulator_bound(self.levels(), act_max)

    def check_weights(self, m: IntModel, where: str, shift: int | None,
                      bias: np.ndarray | None = None, need_bias: bool = False) -> None:
        """Scheme, shape, codes (the C kernels trust them: a ternary byte above 242 reads past
        the decoding table's meaning), shift, biases and that no int32 accumulator overflows."""
        rows, cols = self.rows_cols
        sch = get_scheme(self.scheme)
        if not sch.exportable:
            raise BitmcuError(f"{where}: scheme {self.scheme!r} (float) cannot be exported; "
                              "train with a quantized scheme")
        if max(rows, cols) > MAX_DIM:
            raise BitmcuError(f"{where}: {rows}x{cols} exceeds the engine's {MAX_DIM} limit "
                              "per dimension")
        if sch.name == "ternary" and cols > TERNARY_MAX_IN:
            raise BitmcuError(f"{where}: ternary layers take at most {TERNARY_MAX_IN} inputs, "
                              f"this one has {cols}")
        shape = sch.packed_shape(rows, cols)
        if self.weights.dtype != np.uint8 or self.weights.shape != shape:
            raise BitmcuError(f"{where}: packed weights have shape {self.weights.shape}, "
                              f"expected {shape} uint8")
        _check_codes(where, self.scheme, self.weights, self.levels())
        if need_bias and (bias is None or bias.dtype != np.int8 or bias.shape != (rows,)):
            raise BitmcuError(f"{where}: needs ({rows},) int8 biases")
        if shift is not None and not 0 <= shift <= 31:
            raise BitmcuError(f"{where}: shift {shift} must be 0..31")
        bound = self.accumulator_bound(m.act_max)
        if bound > INT32_MAX:
            raise BitmcuError(f"{where} ({self.scheme}, {rows}x{cols}): worst-case accumulator "
                              f"{bound} overflows int32 (max {INT32_MAX}); use fewer inputs, "
                              "smaller weights or fewer activation bits")


# ------------------------------------------------------------------------------ inputs


@register("pixels")
@dataclass
class Pixels(Op):
    """A classifier's input: one uint8 image of side x side."""

    side: int
    name = "pixels"

    def out(self, x, m):
        return Shape("map", 1, self.side)

    def check(self, x, m, where):
        if not 1 <= self.side <= 255:
            raise BitmcuError(f"{where}: image side {self.side} must be 1..255")

    def forward(self, a, m):
        return np.asarray(a).astype(np.int64).reshape(len(a), 1, self.side, self.side)

    # a batch of a classifier's inputs: (N, side * side) uint8 images
    items = "images"

    def makes(self, m) -> tuple[Shape, str]:
        """What the model's last op must make: one logit per class."""
        return Shape("acc", m.n_classes), "one logit per class"

    def item(self, batch, i: int) -> str:
        return f"image {i}"

    def reference(self, m, batch):
        """The reference's outputs of a batch: (N, n_classes) int32 logits."""
        return reference.forward(m, batch)

    def on_host(self, m, host, batch):
        """The host-compiled engine's outputs of the same batch (bitmcu_run)."""
        return host.run(batch, m.n_classes)

    def c_input(self, m):
        """The model table's n_input, n_features (0: the image itself) and kind (bitmcu.h)."""
        return self.side * self.side, m.n_features if m.front else 0, 0

    def c_defines(self, m):
        """model.h's defines that only this input has."""
        return {"INPUT_SIZE": self.side}

    def meta(self):
        return {"op": self.name, "side": self.side}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["side"])


@register("latent")
@dataclass
class Latent(Op):
    """A decoder's input: an int8 latent of ``size`` values (drawn by the sampler with word
    ``scale``: the multiplier, with rng.UNIFORM for the uniform prior or rng.MIXTURE for a
    per-class mixture; core.rng) and a class; ``side`` is the image side the decoder makes.
    A mixture prior has per class K components: ``cum`` (C, K) uint16 thresholds of the word
    that picks one (the last unused), ``centre`` (C, K, size) int8 in latent units and ``sd``
    (C, K, size) float32, each one's standard deviation in units of z (the C table's spread
    is sd times the multiplier, so a temperature scales it)."""

    size: int
    scale: int
    side: int
    cum: np.ndarray | None = None
    centre: np.ndarray | None = None
    sd: np.ndarray | None = None
    name = "latent"

    @property
    def mixture(self) -> bool:
        return bool(self.scale & MIXTURE)

    @property
    def spread(self) -> np.ndarray:
        """(C, K, size) uint8: the mixture's multipliers of the byte sum at this scale."""
        return np.clip(np.round(self.sd.astype(np.float64) * (self.scale & 255)), 0,
                       255).astype(np.uint8)

    @property
    def nbytes(self) -> int:
        """Bytes of the mixture's tables in flash (0 for the normal and uniform priors)."""
        return 0 if not self.mixture else self.cum.size * 2 + self.centre.size * 2

    def tables_sum(self) -> int:
        """The mixture's checksum as C's bitmcu_mixture_sum computes it (0 for other priors)."""
        if not self.mixture:
            return 0
        c, k, n = self.centre.shape
        h = fnv1a(np.asarray([c, k, n], dtype="<u4").view(np.uint8))
        h = fnv1a(self.cum.astype("<u2").view(np.uint8), h)
        h = fnv1a(self.centre.astype(np.int8).view(np.uint8), h)
        return fnv1a(self.spread, h)

    def describe_prior(self, m) -> str:
        """The input in words, for the export report: the latent, its prior, the image made."""
        prior = describe_scale(self.scale)
        if self.mixture:
            prior += (f" of {self.cum.shape[1]} components per class, its tables {self.nbytes} "
                      "bytes of the weight bytes")
        return (f"a latent of {self.size} int8 values ({prior}) and a class of "
                f"{m.n_classes}; it makes a {self.side}x{self.side} uint8 image")

    def draw(self, state: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
        """((N, size) int8 latents, the states after them) drawn from PRNG states for classes:
        what BITMCU_MODEL_SAMPLE draws in C."""
        if self.mixture:
            return sample_mixture(state, classes, self.cum, self.centre, self.spread)
        return sample_latent(state, self.size, self.scale)

    def latents(self, seeds, classes) -> np.ndarray:
        """(N, size) int8 latents of the given seeds and classes."""
        return self.draw(seed_state(seeds), classes)[0]

    def out(self, x, m):
        return Shape("act", 2 * self.size + m.n_classes)

    def check(self, x, m, where):
        if not 1 <= self.scale & 255 <= 255 or self.scale & ~(255 | UNIFORM | MIXTURE) or \
                self.scale & UNIFORM and self.scale & MIXTURE:
            raise BitmcuError(f"{where}: latent scale {self.scale} must be 1..255 (with "
                              f"0x{UNIFORM:x} for the uniform prior or 0x{MIXTURE:x} for a "
                              "mixture)")
        if self.size < 1 or m.bias_unit:
            raise BitmcuError(f"{where}: a decoder takes a latent of at least one value and "
                              "has no bias unit")
        if self.mixture != (self.cum is not None) or (self.cum is None) != (self.centre is None) \
                or (self.cum is None) != (self.sd is None):
            raise BitmcuError(f"{where}: a mixture prior needs its three tables (cum, centre, "
                              "sd) and the sampler's mixture flag; other priors have neither")
        if self.mixture:
            k = self.cum.shape[-1] if self.cum.ndim == 2 else 0
            shape = (m.n_classes, k, self.size)
            if not 1 <= k <= MAX_COMPONENTS or self.cum.dtype != np.uint16 or \
                    self.cum.shape != shape[:2] or self.centre.dtype != np.int8 or \
                    self.centre.shape != shape or self.sd.shape != shape or \
                    np.any(np.diff(self.cum.astype(np.int64), axis=1) < 0) or \
                    not np.all(np.isfinite(self.sd)) or np.any(self.sd < 0):
                raise BitmcuError(f"{where}: the mixture's tables must be cum (classes, K) "
                                  f"rising uint16, centre (classes, K, latent) int8 and sd of "
                                  f"the same shape, finite and >= 0, K 1..{MAX_COMPONENTS}")

    def forward(self, a, m):
        z, cls = a
        return reference.latent_input(z, cls, m.n_classes, CLASS_VALUE)

    # a batch of a decoder's inputs: (N, 2) rows of (seed, class); the latent is the one the
    # sampler draws from the seed (core.rng, BITMCU_MODEL_SAMPLE in C)
    items = "samples"

    def makes(self, m) -> tuple[Shape, str]:
        """What the model's last op must make: the image."""
        return Shape("map", 1, self.side), f"one image of {self.side}x{self.side}"

    def item(self, batch, i: int) -> str:
        return f"seed {int(batch[i, 0])}, class {int(batch[i, 1])}"

    def reference(self, m, batch):
        """The reference's outputs of a batch: (N, side, side) uint8 images."""
        return reference.generate(m, self.latents(batch[:, 0], batch[:, 1]), batch[:, 1])

    def on_host(self, m, host, batch):
        """The host-compiled engine's outputs of the same batch (bitmcu_generate, its own PRNG
        and latent sampler, which must draw the reference's latents)."""
        images, z = host.generate(batch[:, 0], batch[:, 1], self.side, self.size)
        if not np.array_equal(z, self.latents(batch[:, 0], batch[:, 1])):
            raise BitmcuError("C engine: its latent sampler differs from the reference")
        return images

    def c_input(self, m):
        """The model table's n_input (the latent's size), n_features (0: no front end) and
        kind (bitmcu.h)."""
        return self.size, 0, 1

    def c_defines(self, m):
        """model.h's defines that only this input has, BITMCU_MODEL_SAMPLE(state, z, cls) the
        latent sampler of its prior."""
        scale = f"{self.scale & 255}u"
        flag = "BITMCU_LATENT_UNIFORM" if self.scale & UNIFORM else \
            "BITMCU_LATENT_MIXTURE" if self.mixture else ""
        if flag:
            scale = f"({flag} | {scale})"
        sample = ("bitmcu_sample_mixture((state), (z), (cls), &bitmcu_model_mixture)"
                  if self.mixture else "(bitmcu_sample_latent((state), (z), BITMCU_MODEL_LATENT, "
                  "BITMCU_MODEL_LATENT_SCALE), (void)(cls))")
        defs = {"LATENT": self.size, "LATENT_SCALE": scale, "OUTPUT_SIDE": self.side,
                "BAND_ROWS": m.ops[-1].factor, "SAMPLE(state, z, cls)": sample}
        if self.mixture:  # what bitmcu_check_mixture checks beside the table
            defs["MIXTURE"] = "(&bitmcu_model_mixture)"
            defs["MIXTURE_ENTRIES"] = ("(sizeof bitmcu_mixture_cum / "
                                       "sizeof bitmcu_mixture_cum[0])")
        return defs

    def c_tables(self, m) -> str:
        """model.h's mixture tables (bitmcu_mixture in bitmcu.h); nothing for other priors."""
        if not self.mixture:
            return ""
        c, k, n = self.centre.shape

        def rows(a):  # one line per row of the table (a class's thresholds, a component's values)
            return ",\n".join("    " + ", ".join(str(int(v)) for v in r)
                              for r in a.reshape(-1, a.shape[-1]))
        return (f"/* the latent's mixture prior: {k} components per class; per class the "
                "word's thresholds, each component's centre and spread */\n"
                f"static const uint16_t bitmcu_mixture_cum[{c * k}] = {{\n{rows(self.cum)}\n}};\n"
                f"static const int8_t bitmcu_mixture_centre[{c * k * n}] = {{\n"
                f"{rows(self.centre)}\n}};\n"
                f"static const uint8_t bitmcu_mixture_spread[{c * k * n}] = {{\n"
                f"{rows(self.spread)}\n}};\n"
                "static const bitmcu_mixture bitmcu_model_mixture = {\n"
                f"    .n_classes = {c}, .components = {k}, .latent = {n},\n"
                "    .cum = bitmcu_mixture_cum, .centre = bitmcu_mixture_centre,\n"
                f"    .spread = bitmcu_mixture_spread, .sum = 0x{self.tables_sum():08x}u}};\n\n")

    def meta(self):
        return {"op": self.name, "size": self.size, "scale": self.scale, "side": self.side}

    def arrays(self):
        return {} if not self.mixture else {"cum": self.cum, "centre": self.centre,
                                            "sd": self.sd}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["size"], meta["scale"], meta["side"], arrays.get("cum"),
                   arrays.get("centre"), arrays.get("sd"))


# ------------------------------------------------------------------------------ map ops


@register("conv1", "dw")
@dataclass
class ConvLayer(Weighted):
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
    params = ("map", ("zero", "shift", "side", "channels", "row_bytes", "mult"))

    @property
    def name(self) -> str:
        return self.op

    def step(self, m):
        return front_entry(m)

    @property
    def c_op(self) -> str:
        return self.op

    @classmethod
    def from_levels(cls, op: str, scheme: str, levels: np.ndarray, side: int, shift: int,
                    mult: int = 1):
        sch = get_scheme(scheme)
        levels = np.asarray(levels).reshape(len(levels), 9)
        return cls(op, sch.name, len(levels), side, int(shift), sch.pack(levels), int(mult))

    @property
    def rows_cols(self):
        return self.channels, 9

    @property
    def out_side(self) -> int:
        return self.side - 2

    @property
    def nbytes(self) -> int:
        return int(self.weights.size)

    def out(self, x, m):
        return Shape("map", self.channels, self.out_side)

    def check(self, x, m, where):
        if x.side != self.side:
            raise BitmcuError(f"{where}: takes {self.side}x{self.side} maps but receives "
                              f"{x.side}x{x.side}")
        if self.mult < 1 or (self.op != "dw" and self.mult != 1):
            raise BitmcuError(f"{where}: depth multiplier {self.mult} is not allowed (dw "
                              "layers: >= 1, others: 1)")
        if self.op == "dw" and self.channels != x.n * self.mult:
            raise BitmcuError(f"{where}: {self.channels} channels, expected {x.n * self.mult}")
        if self.op == "conv1" and x.n != 1:
            raise BitmcuError(f"{where}: takes the image, one channel, but receives {x.n}")
        if self.out_side < 1:
            raise BitmcuError(f"{where} cannot take a {x.side}x{x.side} map")
        self.check_weights(m, where, self.shift)

    def forward(self, a, m):
        return reference.conv3x3(self, a, m.act_max)

    def buffer(self, m, i):
        return _map_buffer(self, m, i)

    def row(self, m, i):
        per = f" ({self.mult} per input channel)" if self.mult > 1 else ""
        return TableRow(self.op, self.scheme, 0, self.shift, self.side, self.channels,
                        self.weights.shape[1], self.mult if self.op == "dw" else 0, self.weights,
                        0, f"{self.op} 3x3 {self.scheme}, {self.channels} channels{per}, "
                        f"{self.side}x{self.side} in, shift {self.shift}, {self.nbytes} bytes")

    def meta(self):
        return {"op": self.op, "scheme": self.scheme, "channels": self.channels,
                "side": self.side, "shift": self.shift, "mult": self.mult}

    def arrays(self):
        return {"w": self.weights}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["op"], meta["scheme"], meta["channels"], meta["side"], meta["shift"],
                   arrays["w"], meta["mult"])


@register("pool")
@dataclass
class PoolLayer(Op):
    """2x2 max-pool, stride 2, per channel."""

    channels: int
    side: int  # input side
    name = "pool"
    c_op = "pool"
    step = ConvLayer.step
    params = ConvLayer.params
    mult = 1
    shift = 0

    @property
    def out_side(self) -> int:
        return self.side // 2

    def out(self, x, m):
        return Shape("map", self.channels, self.out_side)

    def check(self, x, m, where):
        if (x.n, x.side) != (self.channels, self.side) or self.side % 2 or self.side < 2:
            raise BitmcuError(f"{where}: pools {self.channels} channels of {self.side}x"
                              f"{self.side} (an even side) but receives {x}")

    def forward(self, a, m):
        return reference.maxpool2(a)

    def buffer(self, m, i):
        return _map_buffer(self, m, i)

    def row(self, m, i):
        return TableRow("pool", None, 0, 0, self.side, self.channels, 0, 0, None, 0,
                        f"2x2 max-pool, {self.side}x{self.side}")

    def meta(self):
        return {"op": self.name, "channels": self.channels, "side": self.side}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["channels"], meta["side"])


def front_entry(m: IntModel) -> str | None:
    """The C function of a CNN's front end, the macro-op over its map ops (None without one):
    all-8-bit convolutions take the one without the any-scheme weight decoder (less flash)."""
    convs = [op for op in m.ops if isinstance(op, ConvLayer)]
    if not convs:
        return None
    return ("bitmcu_front_end_8bit" if all(op.scheme == "8bit" for op in convs)
            else "bitmcu_front_end")


def _map_buffer(op, m: IntModel, i: int) -> tuple[str, int]:
    """A map op's output: a turn buffer, or a buffer of its own where a depth multiplier's
    K channels read it."""
    nxt = m.ops[i + 1] if i + 1 < len(m.ops) else None
    kept = isinstance(nxt, ConvLayer) and nxt.op == "dw" and nxt.mult > 1
    return ("kept" if kept else "turn"), op.out_side ** 2


@register("norm")
@dataclass
class ShiftNorm(Op):
    """The map (the image or the front end's features), flattened, to activations by the
    smallest shift that fits act_max. No table row: the first fc layer's function
    (``bitmcu_step_fc``) does it before its kernel."""

    name = "norm"

    def out(self, x, m):
        return Shape("act", x.size)

    def check(self, x, m, where):
        if x.kind != "map" or x.size > MAX_DIM:
            raise BitmcuError(f"{where}: takes a map of at most {MAX_DIM} values; receives "
                              f"{x} ({x.size} values)")

    def forward(self, a, m):
        return reference.shiftnorm_input(a.reshape(len(a), -1), m.act_max)

    def buffer(self, m, i):
        # a front end's features; the image itself is read where it lies
        return ("feat", m.shapes()[i].size) if not isinstance(m.ops[i - 1], Pixels) else ("", 0)

    def nz_inputs(self, m, i):
        return m.shapes()[i].size

    def meta(self):
        return {"op": self.name}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls()


# ------------------------------------------------------------------------------ fc and stages


@register("fc")
@dataclass
class FCLayer(Weighted):
    """Fully connected layer: packed codes of an exportable scheme (layout: Scheme.pack).
    Classifiers: ShiftNorm + ReLU after it (``relu``), or the logits; decoders: a fixed
    requantization ``shift`` and int8 ``bias``."""

    scheme: str
    n_in: int
    n_out: int
    weights: np.ndarray  # Scheme.packed_shape(n_out, n_in) uint8
    relu: bool
    shift: int | None = None
    bias: np.ndarray | None = None  # (n_out,) int8 biases in output units
    name = "fc"
    c_op = "fc"

    def step(self, m):
        return "bitmcu_step_fc" if self.shift is None else "bitmcu_step_fc_requant"
    params = ("fc", ("relu", "shift", "n_in", "n_out", "row_bytes", "chunk"))

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, relu: bool,
                    shift: int | None = None, bias: np.ndarray | None = None) -> FCLayer:
        sch = get_scheme(scheme)
        levels = np.asarray(levels)
        return cls(sch.name, int(levels.shape[1]), int(levels.shape[0]), sch.pack(levels), relu,
                   shift, bias)

    @property
    def token(self):
        return "fcq" if self.shift is not None else "fc" if self.relu else "logits"

    @property
    def rows_cols(self):
        return self.n_out, self.n_in

    @property
    def nbytes(self) -> int:
        return int(self.weights.size) + (0 if self.bias is None else int(self.bias.size))

    def out(self, x, m):
        return Shape("act" if self.relu else "acc", self.n_out)

    def check(self, x, m, where):
        n = x.n + int(m.bias_unit)
        if x.kind != "act" or self.n_in != n:
            raise BitmcuError(f"{where}: takes {self.n_in} inputs but receives {n}")
        if self.shift is not None and not self.relu:
            raise BitmcuError(f"{where}: a fixed shift requantizes; relu must be set")
        self.check_weights(m, where, self.shift, self.bias, need_bias=self.shift is not None)

    def describe(self, x, y):
        return self.name, self.n_in, self.n_out

    def kernel_work(self):
        work = {f"bitmcu_{get_scheme(self.scheme).c_kernel}": self.n_in * self.n_out}
        if self.shift is None:  # ShiftNorm of its input (the features' or a hidden layer's)
            work["bitmcu_shiftnorm"] = self.n_in
        return work

    def forward(self, a, m):
        if isinstance(a, reference.TextStep):  # a text model's logits
            a.x = self.forward(a.x, m)
            return a
        if m.bias_unit:
            a = np.concatenate([a, a.max(axis=1, keepdims=True)], axis=1)
        acc = reference.fc(self.levels(), a)
        if self.shift is not None:
            return reference.requant_bias(acc, self.shift, self.bias, m.act_max)
        return reference.shiftnorm_relu(acc, m.act_max) if self.relu else acc

    def _feeds_stage(self, m: IntModel, i: int) -> bool:
        return i + 1 < len(m.ops) and isinstance(m.ops[i + 1], StageLayer)

    def chunk(self, m: IntModel, i: int) -> int:
        """Outputs computed at a time: a classifier's all; a decoder's CHUNK_ROWS where it has
        more (and that fits the scheme's row groups), requantized chunk by chunk into bytes (its
        buffer: the first map, or a scratch the next layer's nonzero list is made from), so that
        the accumulators never hold more than a chunk."""
        if self.shift is None or CHUNK_ROWS >= self.n_out or \
                CHUNK_ROWS % get_scheme(self.scheme).row_group:
            return self.n_out
        return CHUNK_ROWS

    def chunked(self, m: IntModel, i: int) -> bool:
        """Whether its outputs go to bytes in its buffer, chunk by chunk (the table's chunk > 0):
        a decoder's layer that makes the first map, or has more outputs than a chunk."""
        return self.shift is not None and (self._feeds_stage(m, i) or
                                           self.chunk(m, i) < self.n_out)

    def acc_rows(self, m, i):
        return self.chunk(m, i)

    def nz_inputs(self, m, i):
        return self.n_in

    def buffer(self, m, i):
        if self._feeds_stage(m, i):
            return "ring", m.ops[i + 1].ring_bytes(True)
        return ("scratch", self.n_out) if self.chunked(m, i) else ("", 0)

    def row(self, m, i):
        what = f"fc {self.scheme} {self.n_in} -> {self.n_out}"
        if self.shift is None:
            return TableRow("fc", self.scheme, int(self.relu), 0, self.n_in, self.n_out,
                            self.weights.shape[1], 0, self.weights, 0,
                            f"{what}, {self.nbytes} bytes")
        chunk = self.chunk(m, i) if self.chunked(m, i) else 0
        return TableRow("fc", self.scheme, 1, self.shift, self.n_in, self.n_out,
                        self.weights.shape[1], chunk, _bias_codes(self), self.n_out,
                        f"{what}, shift {self.shift}; {self.n_out} int8 biases, then "
                        f"{self.weights.size} bytes of codes")

    def meta(self):
        return {"op": self.name, "scheme": self.scheme, "n_in": self.n_in, "n_out": self.n_out,
                "relu": self.relu, "shift": self.shift}

    def arrays(self):
        return {"w": self.weights, **({} if self.bias is None else {"b": self.bias})}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["scheme"], meta["n_in"], meta["n_out"], arrays["w"], meta["relu"],
                   meta["shift"], arrays.get("b"))


def _bias_codes(op) -> np.ndarray:
    """A decoder layer's one array: its int8 biases, then its codes."""
    return np.concatenate([op.bias.view(np.uint8), op.weights.ravel()])


@register("stage")
@dataclass
class StageLayer(Weighted):
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
    name = "stage"
    c_op = "stage"
    c_step = "bitmcu_step_stages"
    params = ("stage", ("factor", "shift", "c_in", "rows", "row_bytes", "side"))

    @property
    def kind(self) -> str:
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

    @property
    def rows_cols(self):
        return self.n_out, self.n_in

    @property
    def nbytes(self) -> int:
        return int(self.weights.size) + int(self.bias.size)

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, c_in: int, side: int, factor: int,
                    shift: int, bias: np.ndarray) -> StageLayer:
        sch = get_scheme(scheme)
        levels = np.asarray(levels).reshape(len(levels), c_in * 9)
        return cls(sch.name, c_in, len(levels) // factor**2, side, factor, int(shift),
                   sch.pack(levels), np.asarray(bias, dtype=np.int8))

    def ring_bytes(self, first: bool) -> int:
        """Bytes of the rows this stage keeps of its input map: all of the first map and of
        small ones, RING_ROWS rows of others."""
        rows = self.side if first or self.side <= RING_ROWS else RING_ROWS
        return self.c_in * self.side * rows

    def out(self, x, m):
        return Shape("map", self.c_out, self.out_side)

    def check(self, x, m, where):
        takes = Shape("map", self.c_in, self.side)
        if self.factor not in (1, 2) or x.size != takes.size or (x.kind == "map" and x != takes):
            raise BitmcuError(f"{where}: takes {takes} (factor {self.factor}) but receives {x}")
        self.check_weights(m, where, self.shift, self.bias, need_bias=True)

    def describe(self, x, y):
        return self.kind, str(Shape("map", self.c_in, self.side)), str(y)

    def kernel_work(self):  # once per pixel
        return {f"bitmcu_{get_scheme(self.scheme).c_kernel}":
                self.n_in * self.n_out * self.side * self.side}

    def forward(self, a, m):
        if a.ndim == 2:
            a = a.reshape(len(a), self.c_in, self.side, self.side)
        return reference.stage(self, a, m.act_max)

    def acc_rows(self, m, i):
        return self.n_out

    def nz_inputs(self, m, i):
        return self.n_in

    def buffer(self, m, i):
        nxt = m.ops[i + 1] if i + 1 < len(m.ops) else None
        if isinstance(nxt, StageLayer):
            return "ring", nxt.ring_bytes(False)
        return "band", self.factor * self.out_side

    def row(self, m, i):
        return TableRow("stage", self.scheme, self.factor, self.shift, self.c_in, self.n_out,
                        self.weights.shape[1], self.side, _bias_codes(self), self.n_out,
                        f"stage {self.kind} {self.scheme} {self.c_in} -> {self.c_out} channels, "
                        f"{self.side}x{self.side} in, shift {self.shift}; {self.n_out} int8 "
                        f"biases, then {self.weights.size} bytes of codes")

    def meta(self):
        return {"op": self.name, "scheme": self.scheme, "c_in": self.c_in, "c_out": self.c_out,
                "side": self.side, "factor": self.factor, "shift": self.shift}

    def arrays(self):
        return {"w": self.weights, "b": self.bias}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["scheme"], meta["c_in"], meta["c_out"], meta["side"], meta["factor"],
                   meta["shift"], arrays["w"], arrays["b"])


# ------------------------------------------------------------------------------ text


@register("tokens")
@dataclass
class Tokens(Op):
    """A text model's input: the token just read, one per step (END, token 0, first: the start
    of a line). ``vocab``: each token's character (vocab[0], END, stands as a newline);
    ``context``: tokens a line holds at most, its END included. A generation reads END, then
    each token it sampled, until it samples END or has context - 1 characters."""

    vocab: str
    context: int
    name = "tokens"

    @property
    def n_tokens(self) -> int:
        return len(self.vocab)

    @property
    def max_chars(self) -> int:
        return self.context - 1

    def out(self, x, m):
        return Shape("token", self.n_tokens)

    def check(self, x, m, where):
        if not 2 <= self.n_tokens <= MAX_TOKENS or self.vocab[0] != "\n" or \
                len(set(self.vocab)) != self.n_tokens:
            raise BitmcuError(f"{where}: a vocabulary of 2..{MAX_TOKENS} distinct characters, "
                              f"END (a newline) first; this one has {self.n_tokens}")
        if not 2 <= self.context <= 255 or m.bias_unit or m.n_classes != self.n_tokens:
            raise BitmcuError(f"{where}: context {self.context} must be 2..255 tokens, with "
                              "one class per token and no bias unit")

    def forward(self, a, m):
        return a  # a TextStep: the caller has set its tokens

    # a batch of a text model's inputs: (N, 1) seeds; a generation samples from the PRNG state
    # of its seed (core.rng) until END or max_chars characters
    items = "generations"

    def makes(self, m) -> tuple[Shape, str]:
        """What the model's last op must make: the next token."""
        return Shape("token", self.n_tokens), "the next token"

    def item(self, batch, i: int) -> str:
        return f"seed {int(batch[i, 0])}"

    def reference(self, m, batch):
        """The reference's outputs of a batch of seeds: per generation its tokens (max_chars,
        END where it ended) then the logits of every step ((max_chars, n_tokens) int32, zeros
        after its end), flattened: C and reference must agree on both."""
        tokens, logits = reference.generate_text(m, batch[:, 0])
        return np.concatenate([tokens, logits.reshape(len(batch), -1)], axis=1)

    def on_host(self, m, host, batch):
        """The host-compiled engine's outputs of the same seeds (bitmcu_text_step, its own
        PRNG and sampler), in the reference's form."""
        tokens, logits = host.generate_text(batch[:, 0], self.max_chars, self.n_tokens)
        return np.concatenate([tokens, logits.reshape(len(batch), -1)], axis=1)

    def c_input(self, m):
        """The model table's n_input (the vocabulary), n_features (0) and kind (bitmcu.h)."""
        return self.n_tokens, 0, 2

    def c_defines(self, m):
        """model.h's defines that only this input has (TOKENS: an initializer of each token's
        character as a UTF-8 string, END's "\\n")."""
        return {"CONTEXT": self.context, "MAX_CHARS": self.max_chars,
                "TOKENS": "{" + ", ".join(c_string(c) for c in self.vocab) + "}"}

    def meta(self):
        return {"op": self.name, "vocab": self.vocab, "context": self.context}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["vocab"], meta["context"])


@register("embed")
@dataclass
class Embed(Op):
    """A token's row of the embedding table: ``width`` activations 0..act_max."""

    table: np.ndarray  # (n_tokens, width) uint8
    name = "embed"
    c_op = "embed"
    c_step = "bitmcu_step_embed"
    params = ("embed", ("zero", "zero_shift", "n_tokens", "width", "zero_bytes", "zero_last"))

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.table.size)

    def out(self, x, m):
        return Shape("act", self.width)

    def check(self, x, m, where):
        if x.kind != "token" or self.table.dtype != np.uint8 or self.table.ndim != 2 or \
                self.table.shape[0] != x.n or not 1 <= self.width <= MAX_DIM:
            raise BitmcuError(f"{where}: needs a ({x.n}, width) uint8 table (one row per "
                              f"token); has {self.table.dtype} {self.table.shape}")
        if int(self.table.max(initial=0)) > m.act_max:
            raise BitmcuError(f"{where}: table values reach {int(self.table.max())}, above "
                              f"act_max {m.act_max}")

    def forward(self, a, m):
        a.x = self.table[a.tokens].astype(np.int64)
        return a

    def buffer(self, m, i):
        return "state", self.width

    def row(self, m, i):
        n, w = self.table.shape
        return TableRow("embed", None, 0, 0, n, w, 0, 0, self.table, 0,
                        f"embed {n} tokens x {w} activations, {self.nbytes} bytes")

    def describe(self, x, y):
        return self.name, x.n, y.n

    def meta(self):
        return {"op": self.name}

    def arrays(self):
        return {"t": self.table}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(arrays["t"])


@register("cell")
@dataclass
class Cell(Weighted):
    """A recurrent cell (Elman, clamped ReLU): its output h is kept from step to step (zeros
    before a line) and h' = clamp(((sum_i level[o, i] * [x, h][i] + 2^(s-1)) >> s) + b, 0,
    act_max), the decoder's fc layer function over [its input x, its own last output h]."""

    scheme: str
    n_x: int  # inputs: the embedding or the cell before
    n_out: int  # its width: outputs, its state
    shift: int
    weights: np.ndarray  # Scheme.packed_shape(n_out, n_x + n_out)
    bias: np.ndarray  # (n_out,) int8
    name = "cell"
    c_op = "cell"
    c_step = "bitmcu_step_cell"
    params = ("cell", ("zero", "shift", "n_in", "n_out", "row_bytes", "n_x"))

    @classmethod
    def from_levels(cls, scheme: str, levels: np.ndarray, shift: int, bias: np.ndarray) -> Cell:
        sch = get_scheme(scheme)
        levels = np.asarray(levels)
        n_out = int(levels.shape[0])
        return cls(sch.name, int(levels.shape[1]) - n_out, n_out, int(shift), sch.pack(levels),
                   np.asarray(bias, dtype=np.int8))

    @property
    def n_in(self) -> int:
        return self.n_x + self.n_out

    @property
    def rows_cols(self):
        return self.n_out, self.n_in

    @property
    def nbytes(self) -> int:
        return int(self.weights.size) + int(self.bias.size)

    def out(self, x, m):
        return Shape("act", self.n_out)

    def check(self, x, m, where):
        if x.kind != "act" or x.n != self.n_x:
            raise BitmcuError(f"{where}: takes {self.n_x} inputs but receives {x}")
        self.check_weights(m, where, self.shift, self.bias, need_bias=True)

    def describe(self, x, y):
        return self.name, f"{self.n_x}+{self.n_out}", self.n_out

    def kernel_work(self):
        return {f"bitmcu_{get_scheme(self.scheme).c_kernel}": self.n_in * self.n_out}

    def forward(self, a, m):
        k = a.cell
        a.cell += 1
        x = np.concatenate([a.x, a.h[k]], axis=1)
        a.x = reference.requant_bias(reference.fc(self.levels(), x), self.shift, self.bias,
                                     m.act_max)
        a.h[k] = a.x
        return a

    def acc_rows(self, m, i):
        return self.n_out

    def nz_inputs(self, m, i):
        return self.n_in

    def buffer(self, m, i):
        return "state", self.n_out

    def row(self, m, i):
        return TableRow("cell", self.scheme, 0, self.shift, self.n_in, self.n_out,
                        self.weights.shape[1], self.n_x, _bias_codes(self), self.n_out,
                        f"cell {self.scheme} {self.n_x}+{self.n_out} -> {self.n_out}, shift "
                        f"{self.shift}; {self.n_out} int8 biases, then {self.weights.size} "
                        "bytes of codes")

    def meta(self):
        return {"op": self.name, "scheme": self.scheme, "n_x": self.n_x, "n_out": self.n_out,
                "shift": self.shift}

    def arrays(self):
        return {"w": self.weights, "b": self.bias}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(meta["scheme"], meta["n_x"], meta["n_out"], meta["shift"], arrays["w"],
                   arrays["b"])


@register("sample")
@dataclass
class Sample(Op):
    """The next token, drawn from the logits: d_i = (max(acc) - acc_i) >> shift, weight w_i =
    table[d_i] (0 beyond the table), r uniform in [0, sum w) by rejection (r = the top k bits of
    the next PRNG word, k the bit length of sum w - 1, drawn again while r >= sum w), and the
    token the first i with w_0 + .. + w_i > r. The table (uint16) is exp(-nats / temperature)
    at each step's mid-point (export: :func:`exp_table`), so the draw follows the softmax of the
    logits at the temperature."""

    nats: float  # nats per unit of the logits' accumulators (the trained scale)
    temperature: float
    shift: int
    table: np.ndarray  # (length,) uint16
    name = "sample"
    c_op = "sample"
    c_step = "bitmcu_step_sample"
    params = ("sample", ("zero", "shift", "n_tokens", "table_len", "zero_bytes", "zero_last"))

    @classmethod
    def at(cls, nats: float, temperature: float) -> Sample:
        shift, table = exp_table(nats, temperature)
        return cls(float(nats), float(temperature), shift, table)

    @property
    def nbytes(self) -> int:
        return 2 * len(self.table)

    def out(self, x, m):
        return Shape("token", x.n)

    def check(self, x, m, where):
        if x.kind != "acc":
            raise BitmcuError(f"{where}: takes logits, receives {x} ({x.kind})")
        if not (self.nats > 0 and self.temperature > 0):
            raise BitmcuError(f"{where}: scale {self.nats} and temperature {self.temperature} "
                              "must be > 0")
        if self.table.dtype != np.uint16 or not 1 <= len(self.table) <= MAX_EXP_TABLE or \
                int(self.table[0]) == 0 or np.any(np.diff(self.table.astype(np.int64)) > 0) or \
                not 0 <= self.shift <= 31:
            raise BitmcuError(f"{where}: the exp table must be 1..{MAX_EXP_TABLE} falling uint16 "
                              f"values from a nonzero one, and the shift 0..31")

    def forward(self, a, m):
        a.logits = a.x
        a.tokens, a.rng = reference.sample(a.x, self.shift, self.table, a.rng)
        return a

    def buffer(self, m, i):
        return "", 0

    def row(self, m, i):
        data = self.table.astype("<u2").view(np.uint8)
        return TableRow("sample", None, 0, self.shift, m.n_classes, len(self.table), 0, 0, data,
                        0, f"sample at temperature {self.temperature:g}: (max - logit) >> "
                        f"{self.shift} indexes {len(self.table)} uint16 weights")

    def describe(self, x, y):
        return self.name, x.n, "1 token"

    def meta(self):
        return {"op": self.name, "nats": self.nats, "temperature": self.temperature,
                "shift": self.shift}

    def arrays(self):
        return {"t": self.table}

    @classmethod
    def from_meta(cls, meta, arrays):
        return cls(float(meta["nats"]), float(meta["temperature"]), meta["shift"], arrays["t"])


def exp_table(nats: float, temperature: float) -> tuple[int, np.ndarray]:
    """The sampler's (shift, table) for logits of ``nats`` per accumulator unit at a
    temperature: the largest shift whose step (2^shift units) is at most EXP_STEP nats after the
    temperature (0 where one unit is more; one more where MAX_EXP_TABLE entries would not reach
    the last nonzero one), and table[d] = round(EXP_ONE * exp(-(d * 2^shift + (2^shift - 1) / 2)
    * nats / temperature)), the mean logit of step d, down to its last nonzero value."""
    per_unit = nats / temperature
    shift = 0
    while shift < 31 and (2 ** (shift + 1)) * per_unit <= EXP_STEP:
        shift += 1
    d = np.arange(MAX_EXP_TABLE + 1)
    while True:  # a coarser step where MAX_EXP_TABLE entries would not reach the last nonzero
        mid = d * 2.0**shift + (2.0**shift - 1) / 2
        table = np.round(EXP_ONE * np.exp(-mid * per_unit))
        if table[-1] < 1 or shift == 31:
            return shift, table[:MAX_EXP_TABLE][table[:MAX_EXP_TABLE] >= 1].astype(np.uint16)
        shift += 1


FNV_START = 0x811C9DC5


def fnv1a(data, h: int = FNV_START) -> int:
    """32-bit FNV-1a of the bytes of an array (bitmcu_sums and bitmcu_mixture_sum in C, the
    example program's image checksum).

    >>> hex(fnv1a(np.frombuffer(b"a", dtype=np.uint8)))
    '0xe40c292c'
    """
    for b in np.asarray(data, dtype=np.uint8).ravel().tobytes():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def c_string(text: str) -> str:
    """A C string literal of UTF-8 text.

    >>> c_string('a"b')
    '"a\\\\"b"'
    """
    out = []
    for b in text.encode():
        c = chr(b)
        out.append(f"\\{c}" if c in '"\\' else c if 32 <= b < 127 else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def check_sequence(ops: list[Op]) -> None:
    """Refuse an op sequence the C engine does not run (ENGINE_RUNS)."""
    tokens = " ".join(op.token for op in ops)
    run = ENGINE_RUNS.get(ops[0].token if ops else "")
    if run is None:
        raise BitmcuError(f"a model starts with its input op, pixels or latent; this one with "
                          f"{tokens.split(' ')[0] if ops else 'nothing'}")
    if not re.fullmatch(run[0], tokens):
        raise BitmcuError(f"the engine runs {run[1]}; this model is: {tokens}")
    n_maps = sum(isinstance(op, ConvLayer | PoolLayer) for op in ops)
    if n_maps > MAX_FRONT:
        raise BitmcuError(f"the front end has {n_maps} layers; the engine takes at most "
                          f"{MAX_FRONT}")
