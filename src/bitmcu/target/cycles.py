"""Cycle model of the QingKe V2 cores (CH32V003 / CH32V002), charged per basic block.

Sources: ../shared/TARGETS.md (instruction_timing microbenchmarks of the CH32V003 in
github cpldcpu/DRAM_exploration; flash wait states from the datasheets and github
cnlohr/rv003usb issue 5). Assumptions, each a parameter of :class:`~bitmcu.target.chips.Chip`:

* every instruction takes 1 cycle, a load or store ``load_store_cycles`` (2), a ``mul``
  ``mul_cycles`` (1: the V2C multiplier is single-cycle by assumption, not measured);
* code executing from flash cannot go faster than the flash delivers it: a 32-bit word costs
  ``flash_word_cycles`` (the wait states + 1: 2 on the V003, 3 on the V002), so a 32-bit
  instruction costs at least that and a 16-bit (compressed) instruction at least half of it;
  code in SRAM has no such limit;
* a taken branch or any jump costs ``branch_penalty_sram`` (2) or ``branch_penalty_flash`` (4 on
  the V003, 6 on the V002) extra cycles, by where the branch instruction executes; the penalty
  covers the fetch of the target's first flash word, so the target's first instruction costs
  only what it would cost from SRAM (up to the penalty: :attr:`Block.entry_fetch`);
* a data load from flash costs ``flash_read_extra`` extra cycles (the wait states).

Checked against the prior art's published chip figures (its firmware built here and profiled;
benchmarks/RESULTS.md, "The cycle model against the prior art's chip figures"): within -0.5% to
+4.4% for its 12 KB model from SRAM and from flash on both chips, -4.1% for its CNN.

Not modelled: pipeline interlocks between dependent instructions, interrupts, the prefetch
buffer's behaviour on short forward branches. Expect a few percent of error, more for code
dominated by those.
"""

from __future__ import annotations

from dataclasses import dataclass

from .chips import RAM_BASE, Chip

ALU, LOAD, STORE, BRANCH, JUMP, MUL = "alu", "load", "store", "branch", "jump", "mul"


def classify(word: int) -> tuple[int, str]:
    """(size in bytes, kind) of the RV32EC(M) instruction whose low bits are in ``word``."""
    if word & 3 != 3:  # 16-bit compressed
        q, f3 = word & 3, (word >> 13) & 7
        if q == 0:
            return 2, {2: LOAD, 6: STORE}.get(f3, ALU)
        if q == 1:
            return 2, {1: JUMP, 5: JUMP, 6: BRANCH, 7: BRANCH}.get(f3, ALU)
        if f3 == 2:
            return 2, LOAD
        if f3 == 6:
            return 2, STORE
        if f3 == 4 and (word >> 2) & 0x1F == 0 and (word >> 7) & 0x1F != 0:
            return 2, JUMP  # c.jr / c.jalr
        return 2, ALU
    op = word & 0x7F
    if op == 0x03:
        return 4, LOAD
    if op == 0x23:
        return 4, STORE
    if op == 0x63:
        return 4, BRANCH
    if op in (0x6F, 0x67):
        return 4, JUMP
    if op == 0x33 and (word >> 25) == 1:
        return 4, MUL
    return 4, ALU


@dataclass
class Block:
    """A decoded basic block: cumulative cycles/instructions after each instruction."""

    addrs: list[int]
    cum_cycles: list[int]
    cum_insns: list[int]
    last_kind: str
    last_addr: int
    end: int  # fall-through address
    entry_fetch: float  # flash wait of the first instruction, hidden by a taken branch's penalty

    @property
    def cycles(self) -> int:
        return self.cum_cycles[-1]

    @property
    def insns(self) -> int:
        return self.cum_insns[-1]


class CycleModel:
    def __init__(self, chip: Chip):
        self.chip = chip

    def insn_cycles(self, addr: int, size: int, kind: str) -> int:
        c = self.chip
        cost = {LOAD: c.load_store_cycles, STORE: c.load_store_cycles, MUL: c.mul_cycles}.get(kind, 1)
        if addr < RAM_BASE:  # fetched from flash
            fetch = c.flash_word_cycles if size == 4 else c.flash_word_cycles / 2
            cost = max(cost, fetch)
        return cost

    def branch_penalty(self, addr: int) -> int:
        c = self.chip
        return c.branch_penalty_flash if addr < RAM_BASE else c.branch_penalty_sram

    def entry_cycles(self, branch_addr: int, block: Block) -> float:
        """Extra cycles of entering ``block`` by a taken branch or jump at ``branch_addr``: the
        penalty, less the part of the target's first fetch that it hides."""
        penalty = self.branch_penalty(branch_addr)
        return penalty - min(penalty, block.entry_fetch)

    def decode_block(self, addr: int, code: bytes) -> Block:
        addrs, cyc, ins = [], [], []
        total, n, off, kind, last, entry = 0.0, 0, 0, ALU, addr, 0.0
        while off < len(code):
            word = int.from_bytes(code[off : off + 4].ljust(4, b"\0"), "little")
            size, kind = classify(word)
            last = addr + off
            cost = self.insn_cycles(last, size, kind)
            if off == 0:
                entry = cost - self.insn_cycles(RAM_BASE, size, kind)
            total += cost
            n += 1
            addrs.append(last)
            cyc.append(total)
            ins.append(n)
            off += size
        return Block(addrs, cyc, ins, kind, last, addr + off, entry)
