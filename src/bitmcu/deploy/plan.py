"""The one memory plan: where in the caller's arena each buffer lies, decided once at export.

model.h carries the offsets (the model's ``nz_at`` and ``feat_at``, each layer's ``buf``);
``bitmcu_check`` verifies them once (in bounds, and apart where they must be); the engine only
reads them. Byte offsets from the arena's start, every buffer 4-byte aligned:

  acc    0                 max_out int32 accumulators
  nz     nz_at             the nonzero list, 2 bytes per input of the widest layer
  feat   feat_at           a CNN's features (n_features bytes), where the fc layers start
  state                    a text model: the embedding of the token read and each cell's
                           output, kept from step to step (nothing else lies over them)
  maps                     a CNN's front end: each layer's output map (``buf``): two turn
                           buffers of the largest map taken in turns, and a buffer of its own
                           for a map that feeds a depth multiplier (its K channels read it)
  rings                    a decoder: each stage's input rows (all of the first map, RING_ROWS
                           rows of later ones); the layer before a stage writes there (``buf``)
  band                     a decoder: the rows of output pixels handed over at once (the last
                           stage's ``buf``): in the accumulators after the last stage's own where
                           it fits (they are written a pixel at a time, the band only after them,
                           and it is handed over before any other layer runs), else here
  scratch                  a decoder's fc layer with more outputs than a chunk: its outputs as
                           bytes, chunk by chunk, before the next layer's nonzero list is made
                           from them; it lies over the rings (dead before any of them or the
                           band is written)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import BitmcuError
from .ir import MAX_DIM, IntModel


def _r4(n: int) -> int:
    return (n + 3) // 4 * 4


@dataclass(frozen=True)
class Plan:
    nz_at: int  # byte offset of the nonzero list
    feat_at: int  # byte offset of a CNN's features (0 without a front end)
    bufs: tuple[int, ...]  # per table row (ops with a C row, in order): its output's offset
    sizes: tuple[int, ...]  # per table row: its output buffer's bytes (0: the accumulators)
    words: int  # int32 words of arena in all

    @property
    def bytes(self) -> int:
        return 4 * self.words


def plan(model: IntModel) -> Plan:
    """The arena layout of a validated integer model; refused where an offset would not fit
    the table's 16 bits."""
    p = _plan(model)
    if p.bytes > MAX_DIM:
        raise BitmcuError(f"the model needs an arena of {p.bytes:,} bytes; the engine's offsets "
                          f"reach {MAX_DIM:,} (and the chips' RAM is 2-4 KB)")
    return p


def _plan(model: IntModel) -> Plan:
    """Each op says what its output needs (ops.Op.buffer); the buffers are laid out by kind in
    the order of the module's docstring."""
    wants = [op.buffer(model, i) for i, op in enumerate(model.ops)]  # (kind, bytes) per op
    nz_at = 4 * model.max_out
    end = nz_at + _r4(2 * model.max_in)
    feat_at = 0
    for kind, size in wants:
        if kind == "feat":
            feat_at, end = end, end + _r4(size)
    at = {}
    for i, (kind, size) in enumerate(wants):
        if kind == "state":
            at[i], end = end, end + _r4(size)
    turn_bytes = _r4(max((size for kind, size in wants if kind in ("turn", "kept")), default=0))
    turns, end = (end, end + turn_bytes), end + 2 * turn_bytes
    turn = 1
    for i, (kind, _) in enumerate(wants):
        if kind == "turn":
            turn ^= 1
            at[i] = turns[turn]
    rings_at = end + sum(_r4(size) for kind, size in wants if kind == "kept")
    for kind_now in ("kept", "ring", "band"):
        for i, (kind, size) in enumerate(wants):
            if kind != kind_now:
                continue
            acc_end = 4 * model.ops[i].acc_rows(model, i)  # after the op's own accumulators
            if kind == "band" and acc_end + size <= nz_at:
                at[i] = acc_end
            else:
                at[i], end = end, end + _r4(size)
    for i, (kind, size) in enumerate(wants):  # dead before any ring or band is written
        if kind == "scratch":
            at[i], end = rings_at, max(end, rings_at + _r4(size))
    rows = [i for i, op in enumerate(model.ops) if op.c_op is not None]
    return Plan(nz_at, feat_at, tuple(at.get(i, 0) for i in rows),
                tuple(wants[i][1] for i in rows), end // 4)
