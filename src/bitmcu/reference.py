"""Numpy reference of the integer engine, mirroring csrc/bitmcu.c function for function.

Integer arithmetic only (int64 numpy with int32 range checks): no floats, no np.round.
Functions take a batch (N, ...) so the whole test set runs in one call.
"""

from __future__ import annotations

import numpy as np

from .ir import INT32_MAX, ConvLayer, FCLayer, IntModel


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
