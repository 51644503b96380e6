"""Numpy reference of the integer engine, mirroring csrc/bitmcu.c function for function.

Integer arithmetic only (int64 numpy with int32 range checks): no floats, no np.round.
Functions take a batch (N, ...) so the whole test set runs in one call.
"""

from __future__ import annotations

import numpy as np

from .ir import INT32_MAX, FCLayer, IntModel


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


def run(model: IntModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) or (N, size*size) uint8 -> (logits (N, n_classes) int32, preds (N,))."""
    x = np.asarray(images).reshape(len(images), -1)
    if x.shape[1] != model.n_input:
        raise ValueError(f"images have {x.shape[1]} pixels, the model takes {model.n_input}")
    a = shiftnorm_input(x, model.act_max)
    acc = None
    for layer in model.layers:
        acc = fc(layer, a)
        if layer.relu:
            a = shiftnorm_relu(acc, model.act_max)
    return acc, acc.argmax(axis=1)
