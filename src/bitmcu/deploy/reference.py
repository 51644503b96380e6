"""Numpy reference of the integer engine, mirroring engine/bitmcu.c function for function:
the integer kernels the ops (ops.py) run, and :func:`forward`, the one walk over a model's ops
(:func:`run`, :func:`generate` and, a step per token, :func:`generate_text` are its entry
points, like the C engine's).

Integer arithmetic only (int64 numpy with int32 range checks): no floats, no np.round.
Functions take a batch (N, ...) so the whole test set runs in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.rng import seed_state, xorshift32

if TYPE_CHECKING:
    from .ir import IntModel
    from .ops import ConvLayer, StageLayer

INT32_MAX = 2**31 - 1


def shift_for(m: np.ndarray, act_max: int) -> np.ndarray:
    """Per sample: smallest s with (m >> s) <= act_max."""
    s = np.zeros_like(m)
    for _ in range(64):
        over = (m >> s) > act_max
        if not over.any():
            break
        s = s + over
    return s


def shift_round(v: np.ndarray, s: np.ndarray, act_max: int) -> np.ndarray:
    """(v + 2^(s-1)) >> s, clamped to act_max: the engine's one rounding rule."""
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    return np.minimum((v + half) >> s, act_max)


def shiftnorm_input(x: np.ndarray, act_max: int) -> np.ndarray:
    """(N, n) uint8 pixels -> (N, n) activations."""
    v = x.astype(np.int64)
    s = shift_for(v.max(axis=1, keepdims=True), act_max)
    return shift_round(v, s, act_max)


def shiftnorm_relu(acc: np.ndarray, act_max: int) -> np.ndarray:
    v = np.maximum(acc.astype(np.int64), 0)
    s = shift_for(v.max(axis=1, keepdims=True), act_max)
    return shift_round(v, s, act_max)


def fc(levels: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(N, n_in) activations and (n_out, n_in) levels -> (N, n_out) int32 accumulators."""
    acc = a.astype(np.int64) @ levels.astype(np.int64).T
    if np.abs(acc).max(initial=0) > INT32_MAX:
        raise OverflowError("accumulator exceeds int32; IntModel.validate should have refused")
    return acc.astype(np.int32)


def requant(acc: np.ndarray, shift: int, act_max: int) -> np.ndarray:
    """Fixed-shift requantization of the front end: min(act_max, (relu(v) + 2^(s-1)) >> s)."""
    v = np.maximum(acc, 0)
    return shift_round(v, np.full_like(v, shift), act_max)


def conv3x3(layer: ConvLayer, a: np.ndarray, act_max: int) -> np.ndarray:
    """(N, C / mult or 1, H, W) activations -> (N, C, H-2, W-2) requantized activations; output
    channel k convolves input channel k // mult."""
    w = layer.levels().astype(np.int64).reshape(layer.channels, 3, 3)
    if layer.mult > 1:
        a = np.repeat(a, layer.mult, axis=1)
    h = a.shape[2] - 2
    acc = np.zeros((a.shape[0], layer.channels, h, h), dtype=np.int64)
    for dy in range(3):
        for dx in range(3):
            acc += w[None, :, dy, dx, None, None] * a[:, :, dy : dy + h, dx : dx + h]
    return requant(acc, layer.shift, act_max)


def maxpool2(a: np.ndarray) -> np.ndarray:
    n, c, h, _ = a.shape
    return a.reshape(n, c, h // 2, 2, h // 2, 2).max(axis=(3, 5))


def forward(model: IntModel, x, upto: int | None = None):
    """The model's ops in turn on a batch of its input (images, (latents, classes), or a text
    model's :class:`TextStep`); with ``upto``, only the ops before that index."""
    a = x
    for op in model.ops[:upto]:
        a = op.forward(a, model)
    return a


def front_end(model: IntModel, x: np.ndarray) -> np.ndarray:
    """(N, n_input) pixels -> (N, n_features) the values the ShiftNorm of the features takes
    (a CNN's front end's outputs; the image itself without one)."""
    norm = next(i for i, op in enumerate(model.ops) if op.name == "norm")
    return forward(model, x, norm).reshape(len(x), -1)


def run(model: IntModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) or (N, size*size) uint8 -> (logits (N, n_classes) int32, preds (N,))."""
    if model.generative:
        raise ValueError("run() takes a classifier; this model is a decoder")
    x = np.asarray(images).reshape(len(images), -1)
    if x.shape[1] != model.n_input:
        raise ValueError(f"images have {x.shape[1]} pixels, the model takes {model.n_input}")
    acc = forward(model, x)
    return acc, acc.argmax(axis=1)


# ------------------------------------------------------------------------------ decoders


def requant_bias(acc: np.ndarray, shift: int, bias: np.ndarray, act_max: int) -> np.ndarray:
    """A decoder layer's output: clamp(((acc + 2^(s-1)) >> s) + bias, 0, act_max), bias (n_out,)
    int8 in output units, >> arithmetic (floor)."""
    v = (acc.astype(np.int64) + ((1 << shift) >> 1)) >> shift
    return np.clip(v + bias.astype(np.int64), 0, act_max)


def latent_input(z: np.ndarray, cls: np.ndarray, n_classes: int, class_value: int) -> np.ndarray:
    """(N, latent) int8 latents and (N,) classes -> (N, 2 * latent + n_classes) activations
    [relu(z), relu(-z), onehot(class) * class_value]."""
    z = np.asarray(z).astype(np.int64)
    onehot = np.zeros((len(z), n_classes), dtype=np.int64)
    onehot[np.arange(len(z)), np.asarray(cls)] = class_value
    return np.concatenate([np.maximum(z, 0), np.maximum(-z, 0), onehot], axis=1)


def windows3x3(m: np.ndarray) -> np.ndarray:
    """(N, C, H, W) maps -> (N, H, W, C * 9) 3x3 neighbourhoods (zeros outside), index
    c * 9 + dy * 3 + dx."""
    n, c, h, w = m.shape
    p = np.zeros((n, c, h + 2, w + 2), dtype=np.int64)
    p[:, :, 1:-1, 1:-1] = m
    taps = [p[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.stack(taps, axis=2).reshape(n, c * 9, h, w).transpose(0, 2, 3, 1)


def stage(st: StageLayer, m: np.ndarray, act_max: int) -> np.ndarray:
    """(N, c_in, H, H) -> (N, c_out, H * factor, H * factor): per pixel an fc layer of its
    3x3 window, requantized, then (factor 2) each pixel's outputs k = c * 4 + dy * 2 + dx
    placed at (c, 2y + dy, 2x + dx)."""
    n, _, h, _ = m.shape
    win = windows3x3(m).reshape(n * h * h, st.n_in)
    acc = win @ st.levels().astype(np.int64).T
    if np.abs(acc).max(initial=0) > INT32_MAX:
        raise OverflowError("accumulator exceeds int32; IntModel.validate should have refused")
    out = requant_bias(acc, st.shift, st.bias, act_max)
    out = out.reshape(n, h, h, st.c_out, st.factor, st.factor)
    return out.transpose(0, 3, 1, 4, 2, 5).reshape(n, st.c_out, h * st.factor, h * st.factor)


def generate(model: IntModel, z: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """(N, latent) int8 latents and (N,) classes -> (N, side, side) uint8 generated images."""
    if not model.generative:
        raise ValueError("generate() takes a decoder; this model is a classifier")
    return forward(model, (z, cls)).reshape(len(z), model.input_size,
                                            model.input_size).astype(np.uint8)


# ------------------------------------------------------------------------------ text


@dataclass
class TextStep:
    """What a text model's walk carries through one step, for N lines at once: the tokens just
    read (then sampled), the value between ops, each cell's state (its last output, kept from
    step to step), the PRNG states and the step's logits."""

    tokens: np.ndarray  # (N,) int64
    h: list[np.ndarray]  # per cell (N, width) int64
    rng: np.ndarray  # (N,) uint32
    x: np.ndarray | None = None
    logits: np.ndarray | None = None
    cell: int = 0  # the next cell's index in h, during the walk


def sample(acc: np.ndarray, shift: int, table: np.ndarray,
           rng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, V) logits -> ((N,) tokens, the PRNG states after the draws): the sampler of
    ops.Sample, exactly as bitmcu_step_sample draws."""
    acc = acc.astype(np.int64)
    d = (acc.max(axis=1, keepdims=True) - acc) >> shift
    w = np.where(d < len(table), table.astype(np.int64)[np.minimum(d, len(table) - 1)], 0)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    k = np.array([int(t - 1).bit_length() for t in total], dtype=np.int64)
    r = np.zeros(len(acc), dtype=np.int64)
    rng = np.asarray(rng, dtype=np.uint32).copy()
    todo = np.ones(len(acc), dtype=bool)
    while todo.any():  # rejection: at most one draw in two is refused
        rng[todo] = xorshift32(rng[todo])
        top = np.where(k > 0, rng.astype(np.int64) >> (32 - np.maximum(k, 1)), 0)
        r = np.where(todo, top, r)
        todo &= r >= total
    return (cum > r[:, None]).argmax(axis=1), rng


def text_step(model: IntModel, s: TextStep) -> TextStep:
    """One step of the walk: the tokens in s.tokens read, the next ones sampled into it."""
    s.cell = 0
    return forward(model, s)


def text_begin(model: IntModel, seeds, states=None) -> TextStep:
    """The walk's state before a line: END read next, every cell's state zeros, the PRNG at
    each seed's state (or at the given PRNG ``states`` themselves)."""
    n = len(seeds)
    rng = seed_state(seeds) if states is None else np.asarray(states, dtype=np.uint32)
    return TextStep(np.zeros(n, dtype=np.int64),
                    [np.zeros((n, op.n_out), dtype=np.int64) for op in model.find("cell")], rng)


def generate_text(model: IntModel, seeds, prefix: list[int] | None = None, states=None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One line per seed: ((N, max_chars) tokens, END from where each line ended; (N, max_chars,
    V) int32 logits of each step, zeros after the end). Step t reads the token before (END
    first), its logits give token t, sampled (or prefix[t], for t < len(prefix): the draw is
    made and replaced); a line ends at END or after max_chars characters. ``states``: start
    from these PRNG states rather than from the seeds' (the text die's)."""
    inp = model.input
    seeds = np.asarray(seeds, dtype=np.int64)
    n, steps = len(seeds), inp.max_chars
    tokens = np.zeros((n, steps), dtype=np.int64)
    logits = np.zeros((n, steps, inp.n_tokens), dtype=np.int64)
    s = text_begin(model, seeds, states)
    live = np.ones(n, dtype=bool)
    for t in range(steps):
        s = text_step(model, s)
        if prefix is not None and t < len(prefix):
            s.tokens = np.full(n, prefix[t], dtype=np.int64)
        logits[live, t] = s.logits[live]
        tokens[live, t] = s.tokens[live]
        live &= s.tokens != 0
        if not live.any():
            break
    return tokens, logits.astype(np.int32)


def decode(model: IntModel, tokens) -> str:
    """A line's tokens -> its characters, up to its first END."""
    out = []
    for t in tokens:
        if int(t) == 0:
            break
        out.append(model.input.vocab[int(t)])
    return "".join(out)


def text_lines(model: IntModel, seeds, prefix: list[int] | None = None) -> list[str]:
    """The line :func:`generate_text` makes of each seed, as text."""
    tokens, _ = generate_text(model, seeds, prefix)
    return [decode(model, row) for row in tokens]


def line_tokens(row) -> np.ndarray:
    """A line's tokens as a chip emits them: up to and with its END (all, where it was cut), as
    bytes."""
    row = np.asarray(row)
    end = np.flatnonzero(row == 0)
    return row[: end[0] + 1 if len(end) else len(row)].astype(np.uint8)


def text_logits(model: IntModel, tokens: np.ndarray) -> np.ndarray:
    """Teacher forcing: (N, T) given tokens (END first) -> (N, T, V) int32 logits of every
    step (the sampler draws too; its tokens are replaced by the given ones)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n, steps = tokens.shape
    out = np.zeros((n, steps, model.n_classes), dtype=np.int64)
    s = text_begin(model, np.zeros(n, dtype=np.int64))
    for t in range(steps):
        s.tokens = tokens[:, t]
        s = text_step(model, s)
        out[:, t] = s.logits
    return out.astype(np.int32)
