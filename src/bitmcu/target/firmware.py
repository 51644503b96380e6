"""Firmware for CH32V003/CH32V002: the engine, the model and N test images, bare metal.

Uses Debian's gcc-riscv64-unknown-elf with our own startup code and linker script. A firmware
that does not fit gives one error naming the memory region and the bytes over.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError, choices
from ..core.outdir import locked, writing
from ..deploy import reference
from ..deploy.codegen import images_header, lines_header, samples_header, table_sums
from ..deploy.export import read_export
from ..deploy.ops import front_entry
from ..deploy.verify import sample_inputs
from .chips import get_chip
from .peripherals import EXTI_PORT

GCC = "riscv64-unknown-elf-gcc"
OBJCOPY = "riscv64-unknown-elf-objcopy"
INSTALL_HINT = ("install Debian's RISC-V cross compiler: apt-get install gcc-riscv64-unknown-elf "
                "binutils-riscv64-unknown-elf picolibc-riscv64-unknown-elf")
HOT = ("auto", "sram", "flash")  # auto: SRAM where the firmware still fits, else flash
# every firmware's own files: start-up, the trace hook, memcpy/memset, the board (clock,
# SysTick, USART1, LED) and its registers
BOARD_FILES = ("startup.S", "fw_trace.h", "mem.c", "board.c", "board.h", "ch32v003_regs.h")
MIN_STACK = 256
# Pre-RA instruction scheduling raises register pressure past RV32E's 16 registers and makes the
# hot loops spill to the stack (measured: 324k vs 241k cycles for the reference model on CH32V003).
DEFAULT_OPT = "-O2 -fno-schedule-insns"


def files_dir() -> Path:
    return Path(str(resources.files("bitmcu") / "target" / "files"))


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BitmcuError(f"{name} not found; {INSTALL_HINT}")
    return path


@dataclass
class FirmwareInfo:
    mcu: str
    elf: str
    bin: str
    hex: str
    n_images: int
    hot_loops: str  # where the kernels run: sram or flash (sram: but those in flash_kernels)
    labels: list[int]
    expected: list[int]  # numpy reference predictions of the embedded images (decoders: the
    #                      crc32 of the reference's pixels of each (seed, class) sample)
    stack_bound: int | None = None  # worst-case stack bytes (static call-graph analysis)
    hot_loops_note: str = ""  # why auto placement moved kernels to flash
    flash_kernels: list[str] | None = None  # sram placement: hot kernels kept in flash anyway
    table_sum: int | None = None  # the model's checksums (model.npz's, equal to model.h's)
    weight_sum: int | None = None
    led: str | None = None  # the pin the firmware toggles at each inference (None: no LED)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def linker_script(chip, min_stack: int = MIN_STACK, flash_hot: list[str] = ()) -> str:
    """The linker script; `flash_hot`: hot kernels (BITMCU_HOT sections) placed in flash."""
    text = (files_dir() / "link.ld.in").read_text()
    keep = "".join(f"        *(.ramfunc.{name})\n" for name in flash_hot).rstrip("\n")
    for k, v in {"MCU": chip.name, "FLASH_KB": chip.flash_kb, "RAM_KB": chip.ram_kb,
                 "MIN_STACK": min_stack, "FLASH_HOT": keep}.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def hot_kernels(model, chip) -> list[str]:
    """The model's hot kernels (BITMCU_HOT functions) on `chip`, the least worth keeping in SRAM
    first: a classifier's ShiftNorm (by the values it goes through) and the fc kernels (by the
    weights they go through), then the front end and the convolution (the most work of a CNN;
    hot only with a multiplier: without one they need the RAM)."""
    work: dict[str, int] = {}
    for op in model.ops:
        for name, n in op.kernel_work().items():
            work[name] = work.get(name, 0) + n
    names = sorted(work, key=lambda n: work[n])
    if model.front and chip.has_mul:
        names += [front_entry(model), "bitmcu_conv3x3"]
    return names


class RamOverflow(BitmcuError):
    """The firmware's RAM (data, arena, stack) exceeds the chip's by `over` bytes."""

    def __init__(self, message: str, over: int):
        super().__init__(message)
        self.over = over


class FlashOverflow(BitmcuError):
    """The firmware's flash (code, tables, embedded images) exceeds the chip's by `over` bytes."""

    def __init__(self, message: str, over: int):
        super().__init__(message)
        self.over = over


def _overflow_error(stderr: str, chip, images: tuple[int, int] = (0, 0)) -> BitmcuError | None:
    """The linker's overflow as one error; ``images``: (bytes per embedded test image, count),
    for the hint to embed fewer where that would make the firmware fit."""
    m = re.findall(r"region [`']?(\w+)'? overflowed by (\d+) bytes", stderr)
    if not m:
        return None
    region, over = m[0][0], int(m[0][1])
    size = (chip.flash_kb if region == "FLASH" else chip.ram_kb) * 1024
    what = "flash" if region == "FLASH" else f"RAM (including {MIN_STACK} bytes kept for the stack)"
    hint = ""
    per, n = images
    if region == "FLASH" and per and over <= per * (n - 1):
        fewer = n - math.ceil(over / per)  # the most images that fit
        hint = f"; each embedded test image takes {per} bytes: --images {fewer} fits"
    elif region == "FLASH" and per:
        hint = (f"; the model and engine alone do not fit (the {n} test image(s) take "
                f"{per * n} bytes): a smaller model is needed")
    message = (f"firmware does not fit the {chip.name}: {what} overflowed by {over} bytes "
               f"({size} bytes available in {region}){hint}")
    return FlashOverflow(message, over) if region == "FLASH" else RamOverflow(message, over)


_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n(\d+) bytes \((\w+)\)')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')


# the functions that call the table's op functions (bitmcu_step_fn), the engine's entry points
STEP_CALLERS = ("bitmcu_run", "bitmcu_generate", "bitmcu_text_step")


def _base(name: str) -> str:
    """A function's name as GCC's call graph titles it: "file.c:name" for static ones,
    "name.constprop.0" for clones."""
    return name.rsplit(":", 1)[-1].split(".")[0]


def is_step(name: str) -> bool:
    """Whether a function is one of the engine's op functions (bitmcu_step_fn in bitmcu.h)."""
    return _base(name).startswith(("bitmcu_step_", "bitmcu_front_end"))


def worst_stack(callgraph_files: list[Path], root: str = "main",
                linked: set[str] | None = None) -> int | None:
    """Worst-case stack bytes of ``root`` from GCC's ``-fcallgraph-info=su`` files.

    ``linked``: the functions the linker kept (the ELF's); an indirect call reaches only those
    (a decoder's engine functions, compiled into every firmware but dropped by --gc-sections
    from a classifier's, are no call target there).
    The deepest call chain of static frame sizes; an indirect call may reach any function with a
    frame, except those already on the chain (the engine does not recurse), by its pointer's
    type: the entry points (:data:`STEP_CALLERS`) call the table's op functions (bitmcu_step_fn:
    :func:`is_step`, nothing else), every other indirect call (the kernels, bitmcu_kernel; a
    firmware's callbacks) anything but those. Library helpers without a frame (libgcc's
    __mulsi3) count 0. None where GCC wrote no call graph or a frame is not static (then it
    cannot be bounded here).
    """
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for f in callgraph_files:
        text = f.read_text()
        for name, size, kind in _CI_NODE.findall(text):
            if kind != "static":
                return None
            frames[name] = max(frames.get(name, 0), int(size))
        for a, b in _CI_EDGE.findall(text):
            calls.setdefault(a, set()).add(b)
    if root not in frames:
        return None
    if linked is not None:
        kept = {_base(n) for n in linked}
        frames = {k: v for k, v in frames.items() if _base(k) in kept or k == root}

    def depth(fn: str, chain: frozenset) -> int:
        targets = calls.get(fn, set())
        if "__indirect_call" in targets:
            steps = _base(fn) in STEP_CALLERS
            targets = (targets - {"__indirect_call"}) | {
                t for t in frames if is_step(t) == steps}
        below = [depth(t, chain | {t}) for t in targets if t not in chain]
        return frames.get(fn, 0) + max(below, default=0)

    return depth(root, frozenset({root}))


def _functions(elf_path: Path) -> set[str]:
    """Names of the functions in an ELF."""
    from elftools.elf.elffile import ELFFile

    with elf_path.open("rb") as f:
        tab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name for s in tab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"}


def _ram_use(elf_path: Path) -> tuple[int, int]:
    from elftools.elf.elffile import ELFFile

    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        size = {s.name: s["sh_size"] for s in elf.iter_sections()}
    return size.get(".data", 0), size.get(".bss", 0)


# pins an LED may use: not USART1's TX (PD5), SWIO (PD1) or NRST (PD7)
LED_PINS = ("PA1", "PA2", "PC0", "PC1", "PC2", "PC3", "PC4", "PC5", "PC6", "PC7", "PD0", "PD2",
            "PD3", "PD4", "PD6")
PORTS = EXTI_PORT  # GPIO port indices (A 0, C 2, D 3): AFIO_EXTICR's codes too


def led_pin(led: str | None) -> tuple[str, int] | None:
    """(port letter, pin) of an --led PIN, checked; None for none."""
    if led is None:
        return None
    if led.upper() not in LED_PINS:
        raise BitmcuError(f"--led {led!r} is not allowed; use {choices(LED_PINS)} (PD5 is "
                          "USART1 TX, PD1 SWIO, PD7 NRST)")
    return led[1].upper(), int(led[2])


def board_defines(chip, led: str | None = None) -> list[str]:
    """board.c's settings: the chip's flash wait states at 48 MHz and the LED's pin."""
    out = [f"-DBOARD_FLASH_LATENCY={chip.flash_read_extra}u"]
    pin = led_pin(led)
    if pin:
        out += [f"-DBOARD_LED_PORT={PORTS[pin[0]]}u", f"-DBOARD_LED_PIN={pin[1]}u"]
    return out


def build_firmware(export_dir: str | Path, mcu: str, out: str | Path | None = None,
                   n_images: int = 4, hot_loops: str = "auto", opt: str = DEFAULT_OPT,
                   led: str | None = None) -> FirmwareInfo:
    """Compile and link the firmware; writes firmware.elf/.bin/.hex/.map and firmware.json.

    ``hot_loops``: where the kernels run; ``auto`` puts them in SRAM (faster: no flash wait
    states) unless the RAM would then overflow, and in flash otherwise (``hot_loops_note`` says
    why). ``led``: a pin the firmware toggles at each inference."""
    chip = get_chip(mcu)
    led_pin(led)
    if hot_loops not in HOT:
        raise BitmcuError(f"--hot-loops {hot_loops!r} is not allowed; use {choices(HOT)}")
    export_dir = Path(export_dir)
    out = (Path(out) if out else export_dir / f"firmware-{chip.name}").absolute()
    with locked(export_dir, shared=True), writing(out, "firmware.json", "firmware") as t:
        return _build(export_dir, chip, t, out, n_images, hot_loops, opt, led)


def _tests(model, export_dir: Path, n: int):
    """What the firmware runs, by the model's entry point: (its main program, (header name,
    text), labels, expected outputs, (bytes per test image in flash, images)). A classifier's
    first n test images of the export with the reference's predictions (fw_main.c); a
    decoder's n (seed, class) pairs with the crc32 of the reference's pixels (fw_gen.c)."""
    command = f"bitmcu firmware {export_dir}"
    if model.is_text:  # n seeds, the crc32 of the reference's tokens (END included)
        if not 1 <= n <= 100:
            raise BitmcuError(f"--images {n}: choose 1..100 (lines the firmware generates)")
        seeds = np.arange(1, n + 1)
        tokens = reference.generate_text(model, seeds)[0]
        expected = [zlib.crc32(reference.line_tokens(row).tobytes()) for row in tokens]
        return ("fw_text.c", ("test_lines.h", lines_header(seeds, None, command)),
                [0] * n, expected, (0, n))
    if model.generative:
        if not 1 <= n <= 100:
            raise BitmcuError(f"--images {n}: choose 1..100 (samples the firmware generates)")
        batch = sample_inputs(model, n)
        expected = [zlib.crc32(im.tobytes()) for im in model.input.reference(model, batch)]
        return ("fw_gen.c", ("test_samples.h", samples_header(batch[:, 0], batch[:, 1], command)),
                batch[:, 1], expected, (0, n))
    test = export_dir / "test_set.npz"
    if not test.is_file():
        raise BitmcuError(f"{export_dir}: test_set.npz missing; re-run `bitmcu export`")
    with np.load(test) as z:
        images, labels = z["images"], z["labels"]
    if not 1 <= n <= len(images):
        raise BitmcuError(f"--images {n}: choose 1..{len(images)} (images in the export)")
    images, labels = images[:n], labels[:n]
    _, expected = reference.run(model, images)
    return ("fw_main.c", ("test_images.h", images_header(images, labels, expected, command)),
            labels, expected, (model.n_input, n))


def _build(export_dir: Path, chip, t: Path, out: Path, n_images: int, hot_loops: str,
           opt: str, led: str | None) -> FirmwareInfo:
    model = read_export(export_dir, check=True)
    main, header, labels, expected, images = _tests(model, export_dir, n_images)
    gcc, objcopy = find_tool(GCC), find_tool(OBJCOPY)

    for f in ("model.h", "bitmcu.c", "bitmcu.h"):
        shutil.copy(export_dir / f, t / f)
    for f in BOARD_FILES:
        shutil.copy(files_dir() / f, t / f)
    shutil.copy(files_dir() / main, t / "fw_main.c")
    (t / header[0]).write_text(header[1])
    cmd, stack, place, note, flash_hot = link_placed(gcc, t, model, chip, hot_loops, opt, images,
                                                     board_defines(chip, led))
    write_images(objcopy, t, cmd)
    info = FirmwareInfo(chip.name, str(out / "firmware.elf"), str(out / "firmware.bin"),
                        str(out / "firmware.hex"), n_images, place,
                        [int(v) for v in labels], [int(v) for v in expected], stack, note,
                        flash_hot or None, *table_sums(model), led.upper() if led else None)
    info.save(t / "firmware.json")
    return info


def link_placed(gcc: str, t: Path, model, chip, hot_loops: str, opt: str,
                images: tuple[int, int] = (0, 0), defines: list[str] = (), keep_free: int = 0
                ) -> tuple[list[str], int | None, str, str, list[str]]:
    """Link t/firmware.elf with the kernels where ``hot_loops`` says (auto: all in SRAM; else
    the fewest, least used kernels in flash; else all in flash; a kernel goes to SRAM only
    where ``keep_free`` bytes of RAM stay free). Returns (command, worst-case stack, placement,
    why auto moved kernels to flash, the kernels kept in flash)."""
    if hot_loops != "auto":
        cmd, stack = _link(gcc, t, chip, hot_loops, opt, images, defines=defines)
        return cmd, stack, hot_loops, "", []
    names, over = hot_kernels(model, chip), 0
    for i in range(len(names)):
        try:
            cmd, stack = _link(gcc, t, chip, "sram", opt, images, names[:i], defines, keep_free)
        except RamOverflow as e:
            if i == 0:
                over = e.over
            continue
        note = "" if i == 0 else (f"but {', '.join(names[:i])} in flash: with all in SRAM the "
                                  f"RAM would {_short(over, keep_free, '')}")
        return cmd, stack, "sram", note, names[:i]
    cmd, stack = _link(gcc, t, chip, "flash", opt, images, defines=defines)
    return cmd, stack, "flash", f"in SRAM they would {_short(over, keep_free, ' the RAM')}", []


def _short(over: int, keep_free: int, what: str) -> str:
    """What kernels in SRAM would cost (`over`: RamOverflow's): overflowing the RAM (`what`),
    or leaving less than ``keep_free`` bytes of it free."""
    if over > keep_free:
        return f"overflow{what} by {over - keep_free} bytes"
    return f"leave {keep_free - over} bytes free, fewer than the {keep_free} kept free"


def write_images(objcopy: str, t: Path, cmd: list[str]) -> None:
    """firmware.bin and firmware.hex beside t/firmware.elf, and build.sh with its command."""
    for fmt, ext in (("binary", "bin"), ("ihex", "hex")):
        subprocess.run([objcopy, "-O", fmt, str(t / "firmware.elf"), str(t / f"firmware.{ext}")],
                       check=True, capture_output=True)
    (t / "build.sh").write_text("# command that built firmware.elf\n" + " ".join(
        f"'{c}'" if any(ch in c for ch in " ()\"") else c for c in cmd) + "\n")


def _link(gcc: str, t: Path, chip, hot_loops: str, opt: str, images: tuple[int, int],
          flash_hot: list[str] = (), defines: list[str] = (), keep_free: int = 0
          ) -> tuple[list[str], int | None]:
    """Compile and link t/firmware.elf with the kernels in `hot_loops` (sram: but `flash_hot`
    in flash); the command and the worst-case stack. Raises RamOverflow where data, arena and
    stack exceed the chip's RAM less `keep_free` bytes (`over` counts those bytes too)."""
    (t / "link.ld").write_text(linker_script(chip, flash_hot=flash_hot))
    hot = f"-DBITMCU_HOT_IN_SRAM={int(hot_loops == 'sram')}"
    cmd = [gcc, *chip.cflags, *opt.split(), "-std=c99", "-Wall", "-Wextra", "-ffreestanding",
           "-nostdlib", "-ffunction-sections", "-fdata-sections", "-msmall-data-limit=8",
           "-fno-builtin", hot, *defines, "-include", str(t / "fw_trace.h"), f"-I{t}",
           str(t / "startup.S"), str(t / "fw_main.c"), str(t / "bitmcu.c"), str(t / "mem.c"),
           str(t / "board.c"),
           "-T", str(t / "link.ld"), "-Wl,--gc-sections", f"-Wl,-Map={t / 'firmware.map'}",
           "-fcallgraph-info=su", "-lgcc", "-o", str(t / "firmware.elf")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=t)
    if r.returncode != 0:
        e = _overflow_error(r.stderr, chip, images)
        if isinstance(e, RamOverflow):
            e.over += keep_free  # bytes short of the headroom, as below
        raise e or BitmcuError(
            f"building the {chip.name} firmware failed:\n{r.stderr.strip()[-3000:]}")
    graphs = sorted(t.glob("*.ci"))
    stack = worst_stack(graphs, linked=_functions(t / "firmware.elf"))
    for g in graphs:
        g.unlink()
    data, bss = _ram_use(t / "firmware.elf")
    ram = chip.ram_kb * 1024
    free = ram - data - bss - (stack or 0)
    if stack is not None and free < keep_free:
        if free >= 0:
            raise RamOverflow(f"{free} bytes of RAM free, fewer than the {keep_free} kept free",
                              keep_free - free)
        raise RamOverflow(
            f"firmware does not fit the {chip.name}: RAM overflowed by {-free} bytes (data {data} "
            f"+ arena and buffers {bss} + worst-case stack {stack} > {ram} bytes)",
            keep_free - free)
    return cmd, stack
