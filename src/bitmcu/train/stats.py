"""Per-layer statistics of a quantized model: parameters, bits, bytes, level usage, entropy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class LayerStats:
    name: str  # conv1, dw1, ... (convolutions of a CNN), fc0, fc1, ...
    scheme: str
    shape: tuple[int, int]  # (out, in); a 3x3 convolution: (channels, 9)
    params: int
    bits: float  # storage bits per weight
    bytes: int  # packed weight bytes
    levels: list[int]
    counts: list[int]  # how often each level is used
    entropy: float  # bits of information per weight actually used

    @property
    def entropy_ratio(self) -> float:
        avail = math.log2(len(self.levels)) if len(self.levels) > 1 else 0.0
        return self.entropy / avail if avail else 0.0


def layer_stats(model) -> list[LayerStats]:
    out = []
    for name, layer in model.weight_layers():
        sch = getattr(layer, "scheme", None)  # None: a plain float layer (convnet teachers)
        n_out, n_in = layer.weight.flatten(1).shape
        if sch is None or not sch.exportable:
            out.append(LayerStats(name, sch.name if sch else "none", (n_out, n_in), n_out * n_in,
                                  32.0, n_out * n_in * 4, [], [], 0.0))
            continue
        q = layer.integer_weight().numpy()
        lv = np.asarray(sch.levels)
        counts = [(q == v).sum() for v in lv]
        p = np.asarray(counts, dtype=float) / q.size
        ent = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
        nbytes = sch.weight_bytes(n_out, n_in)
        out.append(LayerStats(name, sch.name, (n_out, n_in), n_out * n_in, nbytes * 8 / (n_out * n_in),
                              nbytes, lv.tolist(), [int(c) for c in counts], ent))
    return out


def format_info(stats: list[LayerStats]) -> str:
    lines = [f"{'layer':>5} {'scheme':<16}{'shape':>12} {'params':>8} {'bits':>5} {'bytes':>7}"
             f" {'entropy':>8} {'of avail':>8}"]
    for s in stats:
        lines.append(
            f"{s.name:>5} {s.scheme:<16}{f'{s.shape[0]}x{s.shape[1]}':>12} {s.params:>8}"
            f" {s.bits:>5.2f} {s.bytes:>7} {s.entropy:>8.2f} {100 * s.entropy_ratio:>7.1f}%"
        )
    total = sum(s.bytes for s in stats)
    lines.append(f"total weight bytes: {total} ({total / 1024:.2f} KB), "
                 f"parameters: {sum(s.params for s in stats)}")
    return "\n".join(lines)
