"""Building the electronic die's firmware: die.c (clock, timer, button, ADC entropy, I2C1 and
SSD1306 driver, roll, banded drawing) with the engine and a six-class decoder, on bitmcu's own
startup code and linker script, into die.elf/.bin/.hex/.map and die.json (options and sizes).

The same ELF that ``bitmcu die --emulate`` runs is the one a user flashes.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from ...core.errors import BitmcuError, choices
from ...core.outdir import locked, writing
from ...deploy.export import read_export
from ...target import firmware as fw
from ...target.chips import get_chip
from ...target.peripherals import LSI_HZ
from ..pipeline import export
from .display import DEFAULT_DITHER, DITHERS, thresholds
from .font import font_header
from .ssd1306 import POWER_UP_MS, T_OFF_MS

# pins a button may use: not I2C1's PC1/PC2, the entropy ADC's PD4, USART1 TX's PD5, SWIO's PD1
# or NRST's PD7
BUTTON_PINS = ("PA1", "PA2", "PC0", "PC3", "PC4", "PC5", "PC6", "PC7", "PD0", "PD2", "PD3",
               "PD6")
DEFAULT_BUTTON = "PC3"
DEFAULT_POWER = "PC4"  # the display's supply switch: harmless where the display is wired to the
#                        supply directly (it then sleeps instead of losing its supply)
PORTS = fw.PORTS  # GPIO port indices, also AFIO_EXTICR's codes for the EXTI lines
ADC_PIN = ("D", 4, 7)  # PD4 = ADC channel 7, left unconnected: its noise seeds the PRNG
OLED_ADDRESS = 0x3C
I2C_HZ = 400_000
AWU_PSC = (15, 61440)  # AWUPSC code and divider: 0.48 s per count at 128 kHz
AWU_WINDOW_MAX = 63
MAX_TIMEOUT_S = 3600
FACES = 6
RAM_FREE = 128  # bytes of RAM the die keeps free by its static stack bound: kernels go to SRAM
# only where they leave this much (auto placement)


@dataclass
class DieOptions:
    button: str = DEFAULT_BUTTON  # GPIO pin of the button (to ground; internal pull-up)
    dither: str = DEFAULT_DITHER  # contrast (4x4 Bayer after a levels curve) | ordered (4x4
    #                               Bayer) | threshold (at 128): see display.py
    debounce_ms: int = 20  # the button must be stable this long (up, then down) to count
    display_timeout_s: float = 10.0  # the display sleeps this long after the button is let go
    #                                  (0: it stays on)
    led: str | None = None  # a pin toggled at each roll (None: no LED)
    display_power: str | None = DEFAULT_POWER  # a pin that switches the display's supply
    #   through a P-MOSFET (driven low: on); off after the display's timeout (None: none, the
    #   display always powered)

    def check(self) -> None:
        if self.button.upper() not in BUTTON_PINS:
            raise BitmcuError(f"--button {self.button!r} is not allowed; use {choices(BUTTON_PINS)} "
                              "(PC1/PC2 are I2C1, PD4 the entropy ADC, PD5 USART1 TX, PD1 SWIO, "
                              "PD7 NRST)")
        if self.dither not in DITHERS:
            raise BitmcuError(f"--dither {self.dither!r} is not allowed; use {choices(DITHERS)}")
        if self.led is not None:
            fw.led_pin(self.led)
            if self.led.upper() in ("PC1", "PC2", "PD4", self.button.upper()):
                raise BitmcuError(f"--led {self.led}: the die uses it (I2C1 PC1/PC2, the "
                                  f"entropy ADC PD4, the button {self.button.upper()})")
        if self.display_power is not None:
            if self.display_power.upper() not in BUTTON_PINS:
                raise BitmcuError(f"--display-power {self.display_power!r} is not allowed; use "
                                  f"{choices(BUTTON_PINS)} (PC1/PC2 are I2C1, PD4 the entropy "
                                  "ADC, PD5 USART1 TX, PD1 SWIO, PD7 NRST)")
            user = {self.button.upper(): "button", (self.led or "").upper(): "LED"}
            if self.display_power.upper() in user:
                raise BitmcuError(f"--display-power {self.display_power}: the "
                                  f"{user[self.display_power.upper()]} uses it; give each its own "
                                  "pin (--display-power none: no switch)")
        if not 1 <= self.debounce_ms <= 500:
            raise BitmcuError(f"--debounce-ms {self.debounce_ms}: must be 1..500")
        if not (self.display_timeout_s == 0 or
                AWU_PSC[1] / LSI_HZ <= self.display_timeout_s <= MAX_TIMEOUT_S):
            raise BitmcuError(f"--display-timeout {self.display_timeout_s:g}: must be 0 (the "
                              f"display stays on) or {AWU_PSC[1] / LSI_HZ:g}..{MAX_TIMEOUT_S} "
                              "seconds")

    def awu(self) -> tuple[int, int]:
        """(window, wakes): the auto-wakeup's window (counts of 0.48 s) and how many of its
        periods make the display timeout, the nearest the counts allow; (0, 0) for no timeout."""
        if not self.display_timeout_s:
            return 0, 0
        counts = max(1, round(self.display_timeout_s * LSI_HZ / AWU_PSC[1]))
        wakes = -(-counts // AWU_WINDOW_MAX)
        return round(counts / wakes), wakes

    def timeout_s(self) -> float:
        """The display timeout the firmware keeps (at the LSI's typical 128 kHz)."""
        window, wakes = self.awu()
        return window * wakes * AWU_PSC[1] / LSI_HZ

    def off_wakes(self) -> tuple[int, int]:
        """(wakes, window): the auto-wakeup periods (of ``window`` counts) between the display's
        sleep and its supply switched off, the datasheet's tOFF; (0, 0) without a switch."""
        if self.display_power is None or not self.display_timeout_s:
            return 0, 0
        return 1, math.ceil(T_OFF_MS / 1e3 * LSI_HZ / AWU_PSC[1])

    def switch_after_s(self) -> float | None:
        """Seconds from the display's sleep to its supply switched off; None where it is never
        switched off (no switch, or no display timeout)."""
        wakes, window = self.off_wakes()
        return wakes * window * AWU_PSC[1] / LSI_HZ if wakes else None

    @property
    def pin(self) -> tuple[str, int]:
        return port_pin(self.button)

    @property
    def power_pin(self) -> tuple[str, int] | None:
        return None if self.display_power is None else port_pin(self.display_power)


def port_pin(name: str) -> tuple[str, int]:
    """(port letter, pin) of a checked pin name such as PC3."""
    return name[1].upper(), int(name[2])


@dataclass
class DieFirmware:
    mcu: str
    elf: str
    bin: str
    hex: str
    map: str
    export: str
    options: dict
    image_side: int
    scale: int  # display pixels per image pixel, each way
    latent: int
    latent_scale: int
    flash: dict  # text, rodata, data, total, size
    ram: dict  # data, bss, stack_bound, total, size
    hot_loops: str
    hot_loops_note: str
    vocab: str = ""  # the text die's: its model's tokens' characters ("": the picture die)

    @property
    def is_text(self) -> bool:
        return bool(self.vocab)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DieFirmware:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise BitmcuError(f"{path}: not a die firmware description ({e})") from None

    def text(self) -> str:
        f, r = self.flash, self.ram
        o = self.options
        shows = (f"lines of up to {self.image_side} characters" if self.is_text else
                 f"{o['dither']} dithering, {self.image_side}x{self.image_side} image x"
                 f"{self.scale}")
        return (f"{'text ' if self.is_text else ''}die firmware for the {self.mcu}: {self.elf}\n"
                f"  flash {f['total']:,} of {f['size']:,} bytes (text {f['text']:,}, rodata "
                f"{f['rodata']:,}, data {f['data']:,})\n"
                f"  RAM   {r['total']:,} of {r['size']:,} bytes (data {r['data']:,}, bss "
                f"{r['bss']:,}, worst-case stack {r['stack_bound']})\n"
                f"  button {o['button']} (to ground), debounce {o['debounce_ms']} ms, "
                f"{shows} on an SSD1306 at I2C 0x{OLED_ADDRESS:02x} (SDA PC1, SCL PC2), "
                f"entropy from PD4\n"
                f"  results on USART1 TX (PD5, 115200 8N1)"
                + (f", LED {o['led']} toggles at each roll" if o.get("led") else "") + "\n"
                f"  standby between rolls, woken by the button; {self.timeout_text()}"
                + (f"\n  the display's supply switched by {o['display_power']} through a P-MOSFET "
                   "(low = on): off after the display's timeout" if o.get("display_power")
                   and o["display_timeout_s"] else ""))

    def timeout_text(self) -> str:
        opt = DieOptions(**self.options)
        if not opt.display_timeout_s:
            return "the display stays on"
        return (f"the display sleeps {opt.timeout_s():.2f} s after the button is let go "
                "(+-20%: the LSI runs at 100..150 kHz)")


def die_files() -> Path:
    return Path(str(resources.files("bitmcu") / "apps" / "die" / "files"))


def config_header(opt: DieOptions, scale: int, text: bool = False) -> str:
    port, pin = opt.pin
    a_port, a_pin, a_ch = ADC_PIN
    lines = ["/* die_config.h - generated by bitmcu die */",
             f"#define DIE_TEXT {int(text)}",
             f"#define DIE_BUTTON_PORT {PORTS[port]}u /* GPIO{port} */",
             f"#define DIE_BUTTON_PIN {pin}u",
             f"#define DIE_BUTTON_EXTI_PORT {PORTS[port]}u",
             f"#define DIE_DEBOUNCE_MS {opt.debounce_ms}u",
             "#define DIE_DITHER_THRESHOLDS {" + ", ".join(
                 "{" + ", ".join(f"{t}u" for t in row) + "}" for row in thresholds(opt.dither))
             + f"}} /* {opt.dither}: a display pixel is lit above its threshold */",
             f"#define DIE_AWU_PSC {AWU_PSC[0]}u /* LSI / {AWU_PSC[1]} */",
             f"#define DIE_AWU_WINDOW {opt.awu()[0] or AWU_WINDOW_MAX}u",
             f"#define DIE_AWU_WAKES {opt.awu()[1]}u /* display timeout "
             f"{opt.timeout_s():.2f} s; 0: none */",
             f"#define DIE_POWER {int(opt.display_power is not None)} /* the display's supply "
             "switched by a pin */",
             *([f"#define DIE_POWER_PORT {PORTS[opt.power_pin[0]]}u /* GPIO{opt.power_pin[0]} */",
                f"#define DIE_POWER_PIN {opt.power_pin[1]}u",
                # 1 ms more than the display needs: counted from the press, a little before
                # the switch goes on
                f"#define DIE_POWER_UP_MS {POWER_UP_MS + 1:.0f}u"] if opt.power_pin else []),
             f"#define DIE_OFF_WAKES {opt.off_wakes()[0]}u /* the supply off this many "
             "auto-wakeups after the display sleeps (tOFF) */",
             f"#define DIE_OFF_WINDOW {opt.off_wakes()[1]}u",
             f"#define DIE_SCALE {scale}u",
             f"#define DIE_OLED_ADDR 0x{OLED_ADDRESS:02X}u",
             f"#define DIE_I2C_HZ {I2C_HZ}u",
             "#define DIE_CLOCK_HZ 48000000u",
             f"#define DIE_ADC_PORT {PORTS[a_port]}u /* GPIO{a_port} */",
             f"#define DIE_ADC_PIN {a_pin}u",
             f"#define DIE_ADC_CHANNEL {a_ch}u", ""]
    return "\n".join(lines)


def _sizes(elf_path: Path, chip, stack: int | None) -> tuple[dict, dict]:
    from elftools.elf.elffile import ELFFile

    with elf_path.open("rb") as f:
        size = {s.name: s["sh_size"] for s in ELFFile(f).iter_sections()}
    text, rodata, data, bss = (size.get(k, 0) for k in (".text", ".rodata", ".data", ".bss"))
    flash = {"text": text, "rodata": rodata, "data": data, "total": text + rodata + data,
             "size": chip.flash_kb * 1024}
    ram = {"data": data, "bss": bss, "stack_bound": stack,
           "total": data + bss + (stack or 0), "size": chip.ram_kb * 1024}
    return flash, ram


def resolve_export(source: Path, into: Path) -> Path:
    """An export folder for ``source``: itself, or (a run) exported to ``into``."""
    if (source / "model.npz").is_file():
        return source

    if not (source / "checkpoint.pt").is_file() and not source.is_file():
        raise BitmcuError(f"{source}: neither a bitmcu export (model.npz, model.h) nor a run "
                          "(checkpoint.pt)")
    export(source, into, target="ch32v003", command="bitmcu die")
    return into


def build_die(source: str | Path, mcu: str = "ch32v003", out: str | Path | None = None,
              options: DieOptions | None = None, hot_loops: str = "auto",
              opt: str = fw.DEFAULT_OPT) -> DieFirmware:
    """Build the die firmware of a decoder run or export into ``out`` (default: beside it)."""
    options = options or DieOptions()
    options.check()
    chip = get_chip(mcu)
    if hot_loops not in fw.HOT:
        raise BitmcuError(f"--hot-loops {hot_loops!r} is not allowed; use {choices(fw.HOT)}")
    source = Path(source)
    out = (Path(out) if out else source.with_name(source.name + "-die")).absolute()
    gcc, objcopy = fw.find_tool(fw.GCC), fw.find_tool(fw.OBJCOPY)
    # everything, the export of a run included, is made here and put in place at the end
    with locked(source, shared=True), writing(out, "die.json", "die firmware") as t:
        export_dir = resolve_export(source, t / "export")
        model = read_export(export_dir, check=True)
        if not model.generative and not model.is_text:
            raise BitmcuError(f"{source}: a classifier; the die draws its faces with a decoder "
                              "(model.family decoder) of six classes, or lines with a "
                              "character model (model.family charrnn)")
        if model.is_text:
            bad = [c for c in model.input.vocab[1:] if not " " <= c <= "~"]
            if bad:
                raise BitmcuError(f"{source}: the text die's font draws printable ASCII; this "
                                  f"model's vocabulary has {''.join(bad)!r}")
        elif model.n_classes != FACES:
            raise BitmcuError(f"{source}: the decoder makes {model.n_classes} classes; a die "
                              f"needs {FACES} (data.dataset dice)")
        if not model.is_text and model.input_size not in (16, 32):
            raise BitmcuError(f"{source}: images of {model.input_size}x{model.input_size}; the "
                              "die shows 32x32 (or 16x16) images as 64x64 display pixels")
        scale = 0 if model.is_text else 64 // model.input_size
        for f in ("model.h", "bitmcu.c", "bitmcu.h"):
            shutil.copy(export_dir / f, t / f)
        for f in fw.BOARD_FILES:
            shutil.copy(fw.files_dir() / f, t / f)
        shutil.copy(die_files() / "die.c", t / "fw_main.c")
        (t / "die_config.h").write_text(config_header(options, scale, model.is_text))
        if model.is_text:
            (t / "die_font.h").write_text(font_header(model.input.vocab))
        cmd, stack, place, note, _ = fw.link_placed(gcc, t, model, chip, hot_loops, opt,
                                                    defines=fw.board_defines(chip, options.led),
                                                    keep_free=RAM_FREE)
        fw.write_images(objcopy, t, cmd)
        flash, ram = _sizes(t / "firmware.elf", chip, stack)
        for ext in ("elf", "bin", "hex", "map"):
            (t / f"firmware.{ext}").rename(t / f"die.{ext}")
        kept_export = out / "export" if export_dir == t / "export" else export_dir.resolve()
        info = DieFirmware(chip.name, str(out / "die.elf"), str(out / "die.bin"),
                           str(out / "die.hex"), str(out / "die.map"), str(kept_export),
                           asdict(options),
                           model.input.max_chars if model.is_text else model.input_size, scale,
                           model.latent, model.latent_scale, flash, ram, place, note,
                           model.input.vocab if model.is_text else "")
        info.save(t / "die.json")
    return info
