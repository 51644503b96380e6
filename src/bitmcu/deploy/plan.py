"""The one memory plan: where in the caller's arena each buffer lies, decided once at export.

model.h carries the offsets (the model's ``nz_at`` and ``feat_at``, each layer's ``buf``);
``bitmcu_check`` verifies them once (in bounds, and apart where they must be); the engine only
reads them. Byte offsets from the arena's start, every buffer 4-byte aligned:

  acc    0                 max_out int32 accumulators
  nz     nz_at             the nonzero list, 2 bytes per input of the widest layer
  feat   feat_at           a CNN's features (n_features bytes), where the fc layers start
  maps                     a CNN's front end: each layer's output map (``buf``): two turn
                           buffers of the largest map taken in turns, and a buffer of its own
                           for a map that feeds a depth multiplier (its K channels read it)
  rings                    a decoder: each stage's input rows (all of the first map, RING_ROWS
                           rows of later ones); the layer before a stage writes there (``buf``)
  band                     a decoder: the rows of output pixels handed over at once (the last
                           stage's ``buf``)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..core.errors import BitmcuError
from .ir import MAX_DIM, RING_ROWS, IntModel


def _r4(n: int) -> int:
    return (n + 3) // 4 * 4


@dataclass(frozen=True)
class Plan:
    nz_at: int  # byte offset of the nonzero list
    feat_at: int  # byte offset of a CNN's features (0 without a front end)
    bufs: tuple[int, ...]  # per table row (front, fc, stages): its output buffer's byte offset
    sizes: tuple[int, ...]  # per table row: its output buffer's bytes (0: the accumulators)
    words: int  # int32 words of arena in all

    @property
    def bytes(self) -> int:
        return 4 * self.words


def ring_rows(index: int, side: int) -> int:
    """Rows a decoder stage keeps of its input map: all of the first map and of small ones."""
    return side if index == 0 or side <= RING_ROWS else RING_ROWS


def plan(model: IntModel) -> Plan:
    """The arena layout of a validated integer model; refused where an offset would not fit
    the table's 16 bits."""
    p = _plan(model)
    if p.bytes > MAX_DIM:
        raise BitmcuError(f"the model needs an arena of {p.bytes:,} bytes; the engine's offsets "
                          f"reach {MAX_DIM:,} (and the chips' RAM is 2-4 KB)")
    return p


def _plan(model: IntModel) -> Plan:
    nz_at = 4 * model.max_out
    end = nz_at + _r4(2 * model.max_in)
    if model.generative:
        rings = []
        for i, st in enumerate(model.stages):
            rings.append((end, _r4(st.c_in * st.side * ring_rows(i, st.side))))
            end += rings[-1][1]
        band = model.stages[-1].factor * model.input_size if model.stages else model.input_size
        outs = [*rings[1:], (end, band)]
        n_fc = len(model.layers)
        bufs = [0] * (n_fc - 1) + [rings[0][0]] + [at for at, _ in outs]
        sizes = [0] * (n_fc - 1) + [rings[0][1]] + [size for _, size in outs]
        return Plan(nz_at, 0, tuple(bufs), tuple(sizes), (end + _r4(band)) // 4)
    feat_at = 0
    bufs, sizes = [], []
    if model.front:
        feat_at = end
        base = feat_at + _r4(model.n_features)
        turn_bytes = _r4(model.max_map)
        kept, turn = 0, 1
        for L, nxt in itertools.pairwise([*model.front, None]):
            size = L.out_side ** 2
            if nxt is not None and nxt.op == "dw" and nxt.mult > 1:
                bufs.append(base + 2 * turn_bytes + kept)
                kept += _r4(size)
            else:
                turn ^= 1
                bufs.append(base + turn * turn_bytes)
            sizes.append(size)
        end = base + 2 * turn_bytes + kept
    bufs += [0] * len(model.layers)
    sizes += [0] * len(model.layers)
    return Plan(nz_at, feat_at, tuple(bufs), tuple(sizes), end // 4)
