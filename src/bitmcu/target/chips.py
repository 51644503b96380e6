"""Chip facts used by the firmware builder and the cycle model (sources: ../shared/TARGETS.md,
the CH32V003/CH32V002 datasheets, public microbenchmarks). One place, so that a correction is made
once."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import BitmcuError, choices

FLASH_BASE = 0x00000000
RAM_BASE = 0x20000000


@dataclass(frozen=True)
class Chip:
    name: str
    flash_kb: int
    ram_kb: int
    march: str
    has_mul: bool
    clock_hz: int
    # cycle model (see target/cycles.py for how each is charged)
    flash_word_cycles: int  # cycles to fetch one 32-bit word from flash (wait states + 1)
    branch_penalty_sram: int  # extra cycles of a taken branch or jump executing from SRAM
    branch_penalty_flash: int  # ... executing from flash
    load_store_cycles: int  # a load or store to SRAM
    flash_read_extra: int  # extra cycles of a data load from flash (wait states)
    mul_cycles: int  # a mul instruction

    @property
    def cflags(self) -> list[str]:
        flags = [f"-march={self.march}", "-mabi=ilp32e", f"-DBITMCU_HAS_MUL={int(self.has_mul)}"]
        if self.has_mul:
            flags.insert(1, "-mno-div")
        return flags


CHIPS = {
    # QingKe V2A, RV32EC, 1 flash wait state at 48 MHz
    "ch32v003": Chip("ch32v003", 16, 2, "rv32ec", False, 48_000_000, 2, 2, 4, 2, 1, 1),
    # QingKe V2C, RV32EC + Zmmul, 2 flash wait states at 48 MHz (a flash word in 3 cycles: the
    # prior art's flash figures on the V002 are 1.49x those on the V003). GCC 12 needs rv32emc
    # -mno-div to really emit mul (rv32ec_zmmul still calls __mulsi3).
    "ch32v002": Chip("ch32v002", 16, 4, "rv32emc", True, 48_000_000, 3, 2, 6, 2, 2, 1),
}


def get_chip(name: str) -> Chip:
    try:
        return CHIPS[name.lower()]
    except KeyError:
        raise BitmcuError(f"--mcu {name!r} is not supported; use {choices(CHIPS)}") from None
