"""Run firmware in Unicorn and profile it: cycles (by the cycle model), instructions, per-layer
breakdown, flash and RAM use with the measured peak stack.

Protocol with the firmware: it writes events to the 32-bit word ``bitmcu_marker`` (a plain RAM
word on the chip): ``event << 24 | arg`` with event 1 = image start (arg: index), 2 = layer start
(arg: layer), 3 = image end (arg: prediction), 4 = done (stops the run). Any ELF linked with the
project's startup code and linker script that writes these markers can be profiled. A decoder's
firmware also stores each generated pixel to the word ``bitmcu_pixels``; the profiler collects
them per image. A layer that starts many times in one image (a decoder's stages, which run row by
row) is charged all the cycles spent in it.
"""

from __future__ import annotations

import json
import re
import statistics
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from tqdm import tqdm
from unicorn import (
    UC_ARCH_RISCV,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE,
    Uc,
    UcError,
)
from unicorn.riscv_const import UC_RISCV_REG_PC
from unicorn.unicorn_const import UC_MODE_RISCV32

from ..core.errors import BitmcuError
from ..deploy.hostc import status_text
from .chips import FLASH_BASE, RAM_BASE, get_chip
from .cycles import BRANCH, JUMP, CycleModel
from .firmware import build_firmware, led_pin
from .peripherals import Peripherals

if TYPE_CHECKING:
    from .firmware import FirmwareInfo

EV_IMAGE, EV_LAYER, EV_END, EV_DONE = 1, 2, 3, 4
MODEL_SUMS_OFFSET = 36  # table_sum, weight_sum in bitmcu_model (bitmcu.h; tested)
ENGINE_ERROR = 0x800000  # an end marker's argument for a failed run: this | bitmcu_status
PAINT = 0xA5
MAP_FLASH = 64 * 1024  # mapped, so that an overflowing image still loads; the size check is separate
MAP_RAM = 64 * 1024
MAX_INSNS = 500_000_000  # a profile's default limit
PROGRESS_STEP = 2_000_000  # instructions between updates of the progress bar
WFI = 0x10500073  # the one encoding of wfi (no compressed form)


@dataclass
class Inference:
    index: int
    pred: int
    cycles: int
    insns: int
    segments: list[tuple[str, int]] = field(default_factory=list)  # (name, cycles)
    pixels: bytes = b""  # a decoder's generated image, as stored to bitmcu_pixels


@dataclass
class Profile:
    chip: str
    inferences: list[Inference]
    flash: dict[str, int]  # text, rodata, data (load copy), total, size
    ram: dict[str, int]  # data, bss, stack_peak, total, size
    mismatches: int | None  # predictions (decoders: images) different from the reference's
    total_insns: int
    generative: bool = False
    is_text: bool = False  # a text model's: each inference one line, its pixels the tokens
    uart: str = ""  # what the firmware printed on USART1
    led_changes: int = 0  # times the LED pin changed
    uart_errors: list[str] = field(default_factory=list)  # printed lines that disagree

    def cycles_per_token(self) -> int:
        """A text model's cycles per token (a character or a line's end), over all lines."""
        return round(sum(i.cycles for i in self.inferences) /
                     max(1, sum(len(i.pixels) for i in self.inferences)))

    def median_cycles(self) -> int:
        return int(statistics.median(i.cycles for i in self.inferences))

    def segment_medians(self) -> list[tuple[str, int]]:
        names = [n for n, _ in self.inferences[0].segments]
        return [(n, int(statistics.median(dict(i.segments)[n] for i in self.inferences)))
                for n in names]

    def to_dict(self) -> dict:
        return {"chip": self.chip, "median_cycles": self.median_cycles(),
                "median_insns": int(statistics.median(i.insns for i in self.inferences)),
                "ms_at_48mhz": self.median_cycles() / 48e3, "segments": self.segment_medians(),
                "flash": self.flash, "ram": self.ram, "mismatches": self.mismatches,
                "images": len(self.inferences),
                "per_image": [{"index": i.index, "pred": i.pred, "cycles": i.cycles,
                               "insns": i.insns} for i in self.inferences]}

    def text(self) -> str:
        med = self.median_cycles()
        lines = [f"{self.chip}: {len(self.inferences)} inferences, median {med:,} cycles "
                 f"({med / 48e3:.2f} ms at 48 MHz), "
                 f"{int(statistics.median(i.insns for i in self.inferences)):,} instructions"]
        for name, c in self.segment_medians():
            lines.append(f"  {name:<12} {c:>10,} cycles  {100 * c / med:5.1f}%")
        f, r = self.flash, self.ram
        lines.append(f"flash: {f['total']:,} of {f['size']:,} bytes (text {f['text']:,}, rodata "
                     f"{f['rodata']:,}, data {f['data']:,})")
        lines.append(f"RAM:   {r['total']:,} of {r['size']:,} bytes (data {r['data']:,}, bss "
                     f"{r['bss']:,}, peak stack {r['stack_peak']:,})")
        what = ("generated lines" if self.is_text else "generated images" if self.generative
                else "predictions")
        if self.is_text:
            per = self.cycles_per_token()
            lines.insert(1, f"  {per:,} cycles per token: {48e6 / per:,.0f} characters per "
                            "second at 48 MHz")
        if self.uart:
            lines.append(f"USART1 (115200 8N1 on PD5) printed {len(self.uart.splitlines())} "
                         "lines" + (f", the LED changed {self.led_changes} times"
                                    if self.led_changes else "") + ":")
            lines += ["  | " + ln for ln in self.uart.splitlines()[:12]]
            if len(self.uart.splitlines()) > 12:
                lines.append("  | ...")
            lines.append("  the printed results equal the profile's" if not self.uart_errors
                         else "  " + "\n  ".join(self.uart_errors))
        if self.mismatches is not None:
            unit = "line" if self.is_text else "image"
            lines.append(f"{what} equal the numpy reference's for every {unit}"
                         if self.mismatches == 0 else
                         f"{self.mismatches} {what} DIFFER from the numpy reference")
        return "\n".join(lines)


def _sections(elf: ELFFile) -> dict[str, tuple[int, int]]:
    return {s.name: (s["sh_addr"], s["sh_size"]) for s in elf.iter_sections() if s["sh_addr"] or
            s.name in (".text",)}


def _symbols(elf: ELFFile) -> dict[str, int]:
    tab = elf.get_section_by_name(".symtab")
    if tab is None:
        return {}
    return {s.name: s["st_value"] for s in tab.iter_symbols() if s.name}


class Machine:
    """A firmware ELF loaded into Unicorn with the cycle model: flash and RAM mapped (RAM
    painted, for the peak stack), a block hook that counts cycles and instructions, and a write
    hook on the marker word. Peripherals are added with :meth:`map_io`; an access to RAM past the
    chip's, or a callback's :meth:`fail`, ends the run with a clear error."""

    def __init__(self, elf_path: str | Path, chip):
        self.path, self.chip = Path(elf_path), chip
        try:
            f = self.path.open("rb")
        except OSError as e:
            raise BitmcuError(f"{self.path}: cannot open ({e.strerror})") from None
        with f:
            try:
                elf = ELFFile(f)
                if elf["e_machine"] != "EM_RISCV" or elf.elfclass != 32:
                    raise BitmcuError(f"{self.path}: not a 32-bit RISC-V ELF")
                loads = [s for s in elf.iter_segments()
                         if s["p_type"] == "PT_LOAD" and s["p_filesz"] > 0]
                segments = [(s["p_paddr"], s.data()) for s in loads]
                code = [(s["p_vaddr"], s.data()) for s in loads if s["p_flags"] & 1]  # PF_X
                self.sections = _sections(elf)
                self.symbols = _symbols(elf)
                self.entry = elf["e_entry"]
            except ELFError as e:
                raise BitmcuError(f"{self.path}: not a readable ELF file ({e})") from None
        if "bitmcu_marker" not in self.symbols:
            raise BitmcuError(f"{self.path}: no symbol bitmcu_marker; link with bitmcu's startup "
                              "code and write the documented markers")
        uc = self.uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32)
        uc.mem_map(FLASH_BASE, MAP_FLASH)
        uc.mem_map(RAM_BASE, MAP_RAM)
        uc.mem_write(RAM_BASE, bytes([PAINT]) * MAP_RAM)
        for addr, data in segments:
            uc.mem_write(addr, data)
        self.model = CycleModel(chip)
        self.blocks: dict[tuple[int, int], object] = {}
        self.cycles, self.insns = 0.0, 0
        self._prev = self._cur = None
        self._block_start, self._block_insn0 = 0.0, 0
        self.error: str | None = None
        self.oob: int | None = None
        self.on_marker = None  # fn(event, arg, cycles, insns) -> None
        self.on_wfi = None  # fn() -> None: a sleep model, called where the firmware runs wfi
        self._bar = None  # tqdm progress bar of a run
        ram_end = RAM_BASE + chip.ram_kb * 1024
        flash_end = FLASH_BASE + chip.flash_kb * 1024
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_MEM_READ, self._on_flash_read, begin=FLASH_BASE, end=flash_end - 1)
        marker = self.symbols["bitmcu_marker"]
        uc.hook_add(UC_HOOK_MEM_WRITE, self._on_marker, begin=marker, end=marker + 3)
        uc.hook_add(UC_HOOK_MEM_WRITE | UC_HOOK_MEM_READ, self._on_oob, begin=ram_end,
                    end=RAM_BASE + MAP_RAM - 1)
        # wfi (Unicorn would halt on it): a hook on each address that holds its encoding (one
        # that is not an instruction's start never runs)
        for base, data in code:
            for off in range(0, len(data) - 3, 2):
                if int.from_bytes(data[off:off + 4], "little") == WFI:
                    uc.hook_add(UC_HOOK_CODE, self._on_wfi, begin=base + off, end=base + off)

    def _on_block(self, uc, addr, size, _):
        key = (addr, size)
        b = self.blocks.get(key)
        if b is None:
            b = self.blocks[key] = self.model.decode_block(addr, bytes(uc.mem_read(addr, size)))
        prev = self._prev
        if prev is not None and (prev.last_kind == JUMP or
                                 (prev.last_kind == BRANCH and addr != prev.end)):
            self.cycles += self.model.entry_cycles(prev.last_addr, b)
        self._block_start, self._block_insn0 = self.cycles, self.insns
        self.cycles += b.cycles
        self.insns += b.insns
        self._prev = self._cur = b
        if self._bar is not None and self.insns >= self._bar.n + PROGRESS_STEP:
            self._bar.update(self.insns - self._bar.n)

    def _on_flash_read(self, uc, access, addr, size, value, _):
        self.cycles += self.chip.flash_read_extra

    def now(self) -> tuple[float, int]:
        """(cycles, instructions) up to the instruction executing now (a memory access's)."""
        b, pc = self._cur, self.uc.reg_read(UC_RISCV_REG_PC)
        if b is not None and pc in b.addrs:
            k = b.addrs.index(pc)
            return self._block_start + b.cum_cycles[k], self._block_insn0 + b.cum_insns[k]
        return self.cycles, self.insns

    def time(self) -> float:
        """Cycles to the end of the block executing now: the peripherals' clock (cheaper than
        :meth:`now`, late by at most one block)."""
        return self.cycles

    def wait_until(self, cycles: float) -> None:
        """A peripheral's status read that a polling loop repeats until ``cycles``: the loop only
        waits, so the clock jumps there (the instructions it would have spun are not counted)."""
        self.cycles = max(self.cycles, cycles)

    def _on_marker(self, uc, access, addr, size, value, _):
        if self.on_marker is not None:
            cyc, ins = self.now()  # the block charged only up to the store
            self.on_marker(value >> 24, value & 0xFFFFFF, cyc, ins)

    def _on_wfi(self, uc, addr, size, _):
        if self.on_wfi is None:
            self.fail(f"the firmware ran wfi at 0x{addr:08x}; sleeping is modelled only with the "
                      "die's peripherals (bitmcu die --emulate)")
            return
        self.on_wfi()  # it moves the clock to the wake-up, or stops the run
        uc.reg_write(UC_RISCV_REG_PC, addr + 4)  # awake: on after the wfi

    def _on_oob(self, uc, access, addr, size, value, _):
        if self.oob is None:
            self.oob = addr

    def hook_word(self, symbol: str, fn) -> bool:
        """Call fn(value) on every store to the word ``symbol``; False where the ELF has none."""
        if symbol not in self.symbols:
            return False
        a = self.symbols[symbol]
        self.uc.hook_add(UC_HOOK_MEM_WRITE, lambda uc, acc, addr, size, value, _: fn(value),
                         begin=a, end=a + 3)
        return True

    def watch_writes(self, addr: int, size: int, fn) -> None:
        """Call fn() before every store to [addr, addr + size) (a DMA reading that memory)."""
        self.uc.hook_add(UC_HOOK_MEM_WRITE, lambda uc, acc, a, sz, v, _: fn(),
                         begin=addr, end=addr + size - 1)

    def map_io(self, base: int, size: int, read, write) -> None:
        """Map a peripheral: read(offset, size) -> value, write(offset, size, value)."""
        self.uc.mmio_map(base, size, lambda uc, off, sz, _: read(off, sz), None,
                         lambda uc, off, sz, value, _: write(off, sz, value), None)

    def fail(self, message: str) -> None:
        """Stop the run; run() raises a BitmcuError with message."""
        if self.error is None:
            self.error = message
        self.uc.emu_stop()

    def stop(self) -> None:
        self.uc.emu_stop()

    def run(self, max_insns: int, progress: bool = False) -> None:
        """Run from the entry point until stopped or ``max_insns`` instructions; with
        ``progress``, a bar on stderr where it is a terminal (updated every PROGRESS_STEP)."""
        if progress:
            self._bar = tqdm(total=max_insns, unit=" insn", unit_scale=True, disable=None,
                             leave=False, desc=f"emulating {self.path.name}")
            if self._bar.disable:  # stderr is no terminal
                self._bar = None
        try:
            self.uc.emu_start(self.entry, 0xFFFFFFFF, count=max_insns)
        except UcError as e:
            pc = self.uc.reg_read(UC_RISCV_REG_PC)
            if self.error is None:
                raise BitmcuError(f"{self.path}: the emulated firmware crashed at pc=0x{pc:08x} "
                                  f"({e})") from None
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        if self.error is not None:
            raise BitmcuError(f"{self.path}: {self.error}")
        if self.oob is not None:
            raise BitmcuError(f"{self.path}: the firmware accessed 0x{self.oob:08x}, beyond the "
                              f"{self.chip.ram_kb} KB RAM of the {self.chip.name}")

    def memory_use(self) -> tuple[dict[str, int], dict[str, int]]:
        """(flash, RAM) use: sections, and the peak stack measured from the painted RAM."""
        chip, secs = self.chip, self.sections
        ram_now = bytes(self.uc.mem_read(RAM_BASE, chip.ram_kb * 1024))
        text = secs.get(".text", (0, 0))[1]
        rodata = secs.get(".rodata", (0, 0))[1]
        data = secs.get(".data", (0, 0))[1]
        bss = secs.get(".bss", (0, 0))[1]
        bss_end = self.symbols.get("_bss_end", RAM_BASE + data + bss)
        low = next((i for i in range(bss_end - RAM_BASE, len(ram_now)) if ram_now[i] != PAINT),
                   len(ram_now))
        stack = len(ram_now) - low
        flash = {"text": text, "rodata": rodata, "data": data, "total": text + rodata + data,
                 "size": chip.flash_kb * 1024}
        ram = {"data": data, "bss": bss, "stack_peak": stack, "total": data + bss + stack,
               "size": chip.ram_kb * 1024}
        return flash, ram


def profile(elf_path: str | Path, mcu: str | None = None, max_insns: int = MAX_INSNS,
            progress: bool = False, images=None, expected=None) -> Profile:
    """Run an ELF to its DONE marker (at most ``max_insns`` instructions) and profile it.

    ``images`` (N, pixels) uint8, with the reference's ``expected`` predictions: run the
    firmware once per group of as many images as it embeds, each group written over the
    embedded ones in the emulated flash (same addresses, so the same cycles as a firmware built
    with them), for a median over more images than the chip's flash holds."""
    elf_path = Path(elf_path)
    meta = {}
    meta_path = elf_path.with_name("firmware.json")
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise BitmcuError(f"{meta_path}: not valid JSON ({e}); rebuild the firmware with "
                              "`bitmcu firmware`, or remove the file and give --mcu") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("mcu", ""), str):
            raise BitmcuError(f"{meta_path}: not a bitmcu firmware.json (an object with the "
                              "chip under \"mcu\"); rebuild the firmware with `bitmcu firmware`")
    if mcu and meta.get("mcu") and get_chip(mcu).name != meta["mcu"]:
        raise BitmcuError(f"{elf_path}: built for the {meta['mcu']} (firmware.json); profile it "
                          f"with --mcu {meta['mcu']} or without --mcu")
    chip_name = mcu or meta.get("mcu")
    if chip_name is None:
        raise BitmcuError(f"{elf_path}: no firmware.json beside it; give the chip with --mcu")
    chip = get_chip(chip_name)
    if images is None:
        infs, flash, ram, insns, generative, text, board = _run(elf_path, chip, meta, max_insns,
                                                                progress)
        mismatches = None
        if "expected" in meta and len(meta["expected"]) == len(infs):
            got = [zlib.crc32(i.pixels) for i in infs] if generative else [i.pred for i in infs]
            mismatches = sum(g != e for g, e in zip(got, meta["expected"], strict=True))
        prof = Profile(chip.name, infs, flash, ram, mismatches, insns, generative, text,
                       board.usart.text, len(board.led_changes))
        prof.uart_errors = check_uart(prof, meta.get("labels"))
        return prof

    slots = meta.get("n_images")
    if not isinstance(slots, int) or slots < 1:
        raise BitmcuError(f"{elf_path}: profiling other test images needs a classifier's "
                          "firmware built by `bitmcu firmware` (firmware.json names its images)")
    images = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
    infs, insns, use = [], 0, None  # use: (flash, RAM) of the run with the deepest stack
    for k in range(0, len(images), slots):
        group = images[k:k + slots]
        patch = np.concatenate([group, images[:slots - len(group)]])  # a short last group
        got, flash, ram, n, generative, _, _ = _run(elf_path, chip, meta, max_insns, progress,
                                                    patch.tobytes())
        if generative:
            raise BitmcuError(f"{elf_path}: a decoder's firmware generates images; it has no "
                              "test images to replace")
        for i in got[:len(group)]:
            i.index += k
        infs += got[:len(group)]
        insns += n
        if use is None or ram["stack_peak"] > use[1]["stack_peak"]:
            use = (flash, ram)
    mismatches = sum(i.pred != int(e) for i, e in zip(infs, expected, strict=True))
    return Profile(chip.name, infs, *use, mismatches, insns, False)


def _run(elf_path: Path, chip, meta: dict, max_insns: int, progress: bool,
         images: bytes | None = None):
    """One run of a firmware to DONE: (inferences, flash, RAM, instructions, generative, text);
    ``images`` written over bitmcu_test_images first."""
    m = Machine(elf_path, chip)
    board = Peripherals(m, led=led_pin(meta.get("led")))  # clock, SysTick, USART1, the LED
    table = m.symbols.get("bitmcu_model_data")
    if table is not None and meta.get("table_sum") is not None:
        sums = m.uc.mem_read(table + MODEL_SUMS_OFFSET, 8)
        if (int.from_bytes(sums[:4], "little"), int.from_bytes(sums[4:], "little")) != \
                (meta["table_sum"], meta["weight_sum"]):
            raise BitmcuError(f"{elf_path}: its model table is not the model firmware.json was "
                              "built from (checksums differ); rebuild with `bitmcu firmware`")
    if images is not None:
        at = m.symbols.get("bitmcu_test_images")
        if at is None:
            raise BitmcuError(f"{elf_path}: no symbol bitmcu_test_images to write images to")
        m.uc.mem_write(at, images)
    events: list = []
    pixels = bytearray()

    def on_marker(event, arg, cyc, ins):
        events.append((event, arg, cyc, ins, bytes(pixels)))
        if event == EV_IMAGE:
            pixels.clear()
        if event == EV_DONE:
            m.stop()

    m.on_marker = on_marker
    # a generator's output: a decoder's pixels, a text model's tokens
    text = m.hook_word("bitmcu_tokens", lambda v: pixels.append(v & 0xFF))
    generative = m.hook_word("bitmcu_pixels", lambda v: pixels.append(v & 0xFF)) or text
    m.run(max_insns, progress)
    if not events or events[-1][0] != EV_DONE:
        raise BitmcuError(f"{elf_path}: no DONE marker after {max_insns:,} instructions (a "
                          "firmware that runs longer: --max-instructions)")
    infs = _inferences(events)
    for i in infs:
        if i.pred & ENGINE_ERROR:
            raise BitmcuError(f"{elf_path}: the engine returned {status_text(i.pred & 0xFF)} "
                              f"on {'sample' if generative else 'image'} {i.index}")
    if not infs:
        raise BitmcuError(f"{elf_path}: ran to DONE but wrote no image start/end markers")
    flash, ram = m.memory_use()
    board.usart.flush()
    return infs, flash, ram, m.insns, generative, text, board


@dataclass
class Measured:
    """An export's firmware and its emulated profile (`measure_export`)."""

    fw: FirmwareInfo
    prof: Profile

    def figures(self) -> dict:
        """The figures a search trial or a retrained seed records."""
        return {"flash": self.prof.flash["total"], "ram": self.prof.ram["total"],
                "stack_peak": self.prof.ram["stack_peak"], "stack_bound": self.fw.stack_bound,
                "cycles": self.prof.median_cycles(), "placement": self.fw.hot_loops}


def measure_export(export_dir: str | Path, mcu: str, n_images: int = 4, exact: bool = True,
                   images=None, expected=None) -> Measured:
    """Build the firmware of an export with ``n_images`` embedded test images and run it in the
    emulator (on ``images``, written over the embedded ones, where given: see `profile`).
    ``exact``: an emulated prediction that differs from the numpy reference's is an error (else
    the profile's ``mismatches`` says so)."""

    fw = build_firmware(export_dir, mcu, n_images=n_images)
    prof = profile(fw.elf, images=images, expected=expected)
    if exact and prof.mismatches:
        raise BitmcuError(f"{fw.elf}: {prof.mismatches} emulated predictions differ from the "
                          "numpy reference")
    return Measured(fw, prof)


UART_SLACK = 64  # cycles between a SysTick read and the marker beside it (a few instructions)
_UART_LINE = {
    "image": re.compile(r"image (?P<i>\d+): prediction (?P<out>\d+), label (?P<label>\d+), "
                        r"(?P<cycles>\d+) cycles, status (?P<status>\d+)"),
    "sample": re.compile(r"sample (?P<i>\d+): class (?P<out>\d+), (?P<cycles>\d+) cycles"),
    "line": re.compile(r"line (?P<i>\d+): (?P<out>.*), (?P<cycles>\d+) cycles"),
}
_UART_DONE = re.compile(r"done: (\d+) \w+, (\d+) errors")


def check_uart(prof: Profile, labels: list[int] | None = None) -> list[str]:
    """Where what the firmware printed on USART1 disagrees with what the profile measured: one
    line per inference with its prediction (a classifier's, and the label the firmware embeds),
    class (a decoder's) or characters (a text model's, one per token but the end), and its
    SysTick cycles within UART_SLACK of the profile's; then the summary line. Empty: they
    agree."""
    kind = "line" if prof.is_text else "sample" if prof.generative else "image"
    lines = [ln for ln in prof.uart.split("\r\n") if ln.startswith(kind + " ")]
    errors = []
    if len(lines) != len(prof.inferences):
        return [f"USART1: {len(lines)} {kind} lines printed for {len(prof.inferences)} "
                "inferences"]
    for inf, ln in zip(prof.inferences, lines, strict=True):
        m = _UART_LINE[kind].fullmatch(ln)
        if m is None:
            errors.append(f"USART1: {ln!r} is not a {kind} line")
            continue
        idx, cycles, out = int(m["i"]), int(m["cycles"]), m["out"]
        if kind == "image":
            ok = int(out) == inf.pred and m["status"] == "0" and (
                labels is None or int(m["label"]) == labels[inf.index])
        elif kind == "sample":
            ok = int(out) == inf.pred
        else:  # one character a token, but the line's end
            ok = len(out) == max(0, len(inf.pixels) - 1)
        if idx != inf.index or not ok or abs(cycles - inf.cycles) > UART_SLACK:
            errors.append(f"USART1: {ln!r} disagrees with the profile ({kind} {inf.index}: "
                          f"{inf.pred}, {inf.cycles} cycles)")
    done = _UART_DONE.search(prof.uart)
    if done is None or int(done.group(1)) != len(lines) or int(done.group(2)) != 0:
        errors.append(f"USART1: no summary line of {len(lines)} {kind}s and 0 errors")
    return errors


def _inferences(events) -> list[Inference]:
    """Inferences from the marker events; cycles counted between whole-cycle marks (the model
    charges half cycles), so that the segments add up to the inference."""
    out, cur, last, seg = [], None, None, {}
    for ev, arg, cyc, ins, pixels in events:
        cyc = round(cyc)
        if ev == EV_IMAGE:
            cur = Inference(arg, -1, 0, 0)
            start, seg = (cyc, ins), {}
            last = ("input", cyc)
        elif cur is None:
            continue
        elif ev == EV_LAYER:
            seg[last[0]] = seg.get(last[0], 0) + cyc - last[1]
            last = (f"layer {arg}", cyc)
        elif ev == EV_END:
            seg[last[0]] = seg.get(last[0], 0) + cyc - last[1]
            cur.segments = list(seg.items())
            cur.pred = arg
            cur.cycles = cyc - start[0]
            cur.insns = int(ins - start[1])
            cur.pixels = pixels
            out.append(cur)
            cur = None
    return out
