"""Numpy reference of the integer engine, mirroring engine/bitmcu.c function for function.

Integer arithmetic only (int64 numpy with int32 range checks): no floats, no np.round.
Functions take a batch (N, ...) so the whole test set runs in one call.
"""

from __future__ import annotations

import numpy as np

from .ir import CLASS_VALUE, INT32_MAX, ConvLayer, FCLayer, IntModel, StageLayer


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


def fc(layer: FCLayer, a: np.ndarray) -> np.ndarray:
    """(N, n_in) activations -> (N, n_out) int32 accumulators."""
    acc = a.astype(np.int64) @ layer.levels().astype(np.int64).T
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


def front_end(model: IntModel, x: np.ndarray) -> np.ndarray:
    """(N, n_input) pixels -> (N, n_features) features of the convolutional front end."""
    a = x.astype(np.int64).reshape(len(x), 1, model.input_size, model.input_size)
    for layer in model.front:
        a = maxpool2(a) if layer.op == "pool" else conv3x3(layer, a, model.act_max)
    return a.reshape(len(x), -1)


def run(model: IntModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) or (N, size*size) uint8 -> (logits (N, n_classes) int32, preds (N,))."""
    x = np.asarray(images).reshape(len(images), -1)
    if x.shape[1] != model.n_input:
        raise ValueError(f"images have {x.shape[1]} pixels, the model takes {model.n_input}")
    if model.front:
        x = front_end(model, x)
    a = shiftnorm_input(x, model.act_max)
    acc = None
    for layer in model.layers:
        if model.bias_unit:
            a = np.concatenate([a, a.max(axis=1, keepdims=True)], axis=1)
        acc = fc(layer, a)
        if layer.relu:
            a = shiftnorm_relu(acc, model.act_max)
    return acc, acc.argmax(axis=1)


# ------------------------------------------------------------------------------ decoders


def requant_bias(acc: np.ndarray, shift: int, bias: np.ndarray, act_max: int) -> np.ndarray:
    """A decoder layer's output: clamp(((acc + 2^(s-1)) >> s) + bias, 0, act_max), bias (n_out,)
    int8 in output units, >> arithmetic (floor)."""
    v = (acc.astype(np.int64) + ((1 << shift) >> 1)) >> shift
    return np.clip(v + bias.astype(np.int64), 0, act_max)


def latent_input(model: IntModel, z: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """(N, latent) int8 latents and (N,) classes -> (N, 2 * latent + n_classes) activations
    [relu(z), relu(-z), onehot(class) * CLASS_VALUE]."""
    z = np.asarray(z).astype(np.int64)
    onehot = np.zeros((len(z), model.n_classes), dtype=np.int64)
    onehot[np.arange(len(z)), np.asarray(cls)] = CLASS_VALUE
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
    a = latent_input(model, z, cls)
    for layer in model.layers:
        a = requant_bias(fc(layer, a).astype(np.int64), layer.shift, layer.bias, model.act_max)
    c0, s0 = model.start
    m = a.reshape(len(a), c0, s0, s0)
    for st in model.stages:
        m = stage(st, m, model.act_max)
    return m.reshape(len(a), model.input_size, model.input_size).astype(np.uint8)
