"""Rolling the die in the emulator: the die ELF in Unicorn with the peripheral models and the
SSD1306 (target/peripherals.py, die/ssd1306.py), scripted button presses, and per roll the face
drawn, the frame read back from the display's memory, the cycles and the I2C time.

Presses: by default one roll at start-up and then, ``gap_ms`` after each roll ends (or after
the last press was let go, where that is later), a press held ``hold_ms``; or an explicit
script of (start, length) presses in ms from reset. The run ends once the firmware sleeps for
good after the last roll (its display timed out), or, with a script, once the script is over
and the firmware waits for a press. The sleeps and the display's history make the energy
budget (die/energy.py).

The expected frame of a roll (:func:`expected_frame`) is what the numpy reference generates for
the roll's PRNG state (read from the firmware's ``die_state``), scaled up and dithered as
documented: it must equal the frame read from the display model, pixel for pixel.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from ...core.errors import BitmcuError
from ...core.rng import xorshift32
from ...deploy import reference
from ...deploy.export import read_export
from ...deploy.hostc import status_text
from ...target.chips import get_chip
from ...target.emulator import ENGINE_ERROR, Machine
from ...target.firmware import led_pin
from ...target.peripherals import WAKE_US, Peripherals, Press, Sleep
from ...train.config import load_config
from ..judge import default_oracles, load_oracle, read_all
from .display import LEFT_COLUMN, display_bits, frame_image
from .energy import CURRENTS, Projection, display_amps, project, session_budget
from .firmware import DieFirmware, DieOptions
from .font import glyphs, render_line
from .ssd1306 import SSD1306

EV_ROLL, EV_LAYER, EV_END, EV_TX_START, EV_TX_END, EV_PATTERN, EV_DROP = 1, 2, 3, 5, 6, 7, 8
T_AF_MS = 100.0  # SSD1306 DS section 8.9.2: SEG/COM on 100 ms after AFh with the charge pump


@dataclass
class Roll:
    index: int
    face: int  # 1..6, as the firmware drew it (0: the model reported an error)
    state: int  # the PRNG state the roll started from (die_state)
    press_cycle: int | None  # when the button went down (None: the roll at start-up)
    start_cycle: int  # the roll's start (after the debounce)
    end_cycle: int  # the last byte sent and the roll done
    display_cycles: int  # in the I2C transfers of the picture (waits for the wire included)
    i2c_bytes: int
    i2c_wire_ms: float  # time the I2C bus was busy, at the SCL clock the firmware set
    frame: np.ndarray = field(repr=False, default=None)  # (64, 128) bool, read from the display
    wake_cycles: int = 0  # the wake-up from standby at the press (0: the chip was awake)
    display_woke: bool = False  # the display had timed out: it was turned on for this roll
    visible_cycle: int = 0  # the face finished and the panel lit (T_AF after a timeout)

    @property
    def generation_cycles(self) -> int:
        return self.end_cycle - self.start_cycle - self.display_cycles

    def press_to_display_ms(self, clock_hz: int) -> float | None:
        if self.press_cycle is None:
            return None
        return (self.end_cycle - self.press_cycle) / clock_hz * 1e3


@dataclass
class DieRun:
    firmware: DieFirmware
    rolls: list[Roll]
    ram: dict
    flash: dict
    clock_hz: int
    scl_hz: float
    patterns: list = field(default_factory=list)  # frames of the test pattern (button held at
    #                                               power-up), (64, 128) bool each
    sleeps: list[Sleep] = field(default_factory=list)
    display_history: list = field(default_factory=list)  # (cycle, on, charge pump, lit pixels)
    end_cycle: float = 0.0  # where the emulation ended
    uart: str = ""  # what the firmware printed on USART1
    led_changes: int = 0
    dropped: int = 0  # rolls started by an edge that was no press (a bounce, a short press)

    def uart_errors(self) -> list[str]:
        """Where the printed lines disagree with the emulated rolls: one line per roll, its face
        (or the line's length in characters) and its cycles awake since the press (within 1,000
        of the emulator's)."""
        kind = "press" if self.firmware.is_text else "roll"
        pat = re.compile(rf"{kind} (\d+): (.*), (\d+) cycles, status (\d+)")
        lines = [ln for ln in self.uart.split("\r\n") if ln.startswith(kind + " ")]
        if len(lines) != len(self.rolls):
            return [f"USART1: {len(lines)} {kind} lines printed for {len(self.rolls)} rolls"]
        errors = []
        for r, ln in zip(self.rolls, lines, strict=True):
            m = pat.fullmatch(ln)
            drawn = (m and (len(m[2]) if self.firmware.is_text else
                            int(m[2][len("face "):]) if m[2].startswith("face ") else None))
            # cycles awake since the press (SysTick stands still in standby) or start-up
            awake = r.end_cycle - (r.start_cycle if r.press_cycle is None else
                                   r.press_cycle + r.wake_cycles)
            # (the start-up roll's count also covers its 32 ADC conversions, ~10,000 cycles)
            slack = 1000 if r.press_cycle is not None else 20_000
            if m is None or int(m[1]) != r.index or drawn != r.face or m[4] != "0" or \
                    abs(int(m[3]) - awake) > slack:
                errors.append(f"USART1: {ln!r} disagrees with roll {r.index} (face or length "
                              f"{r.face}, {awake} cycles awake since the press)")
        return errors

    def awake_after(self, r: Roll) -> float | None:
        """Cycles from a roll's press to the chip's next standby (None: it never slept after)."""
        nxt = next((s.start for s in self.sleeps if s.start >= r.end_cycle), None)
        return None if nxt is None or r.press_cycle is None else nxt - r.press_cycle

    def timed_out_after(self) -> float | None:
        """Seconds from the last roll's release (the chip's standby) to the display turned off,
        where the emulation went that far."""
        if not self.rolls:
            return None
        last = self.rolls[-1].end_cycle
        sleep = next((s.start for s in self.sleeps if s.start >= last), None)
        off = next((t for t, on, *_ in self.display_history if t >= last and not on), None)
        return None if sleep is None or off is None else (off - sleep) / self.clock_hz

    def projection(self, rolls_per_day: float = 20.0, battery_mah: float = 220.0
                   ) -> Projection | None:
        """Battery life at ``rolls_per_day`` from the pressed rolls' medians: those of a dark
        display where there are any (the use's: each face shown until the timeout), else all
        (None: no roll was pressed or the chip never slept after one)."""
        opt = DieOptions(**self.firmware.options)
        awake = [self.awake_after(r) for r in self.rolls]
        rolls = [(r, a / self.clock_hz) for r, a in zip(self.rolls, awake, strict=True)
                 if a is not None]
        if not rolls:
            return None
        dark = [(r, a) for r, a in rolls if r.display_woke]
        n = len(dark or rolls)
        basis = f"{n} roll{'s' if n != 1 else ''} " + (
            "of a dark display" if dark else "with the display on (--press-gap longer than the "
            "timeout emulates rolls of a dark display)")
        rolls = dark or rolls
        run = CURRENTS["mcu_run"].amps
        coulombs = [(run + display_amps(True, True, int(r.frame.sum()))) * a for r, a in rolls]
        timeout = self.timed_out_after()
        return project(float(np.median(coulombs)), float(np.median([a for _, a in rolls])),
                       float(np.median([r.frame.sum() for r, _ in rolls])),
                       opt.timeout_s() if timeout is None else timeout, opt.awu()[1],
                       rolls_per_day, battery_mah, opt.switch_after_s(), basis)

    def summary(self) -> dict:
        pressed = [r for r in self.rolls if r.press_cycle is not None]
        med = lambda v: float(np.median(v)) if len(v) else None  # noqa: E731
        faces = [r.face for r in self.rolls]
        drawn = ({"line_lengths": faces} if self.firmware.is_text else
                 {"faces": {str(f): faces.count(f) for f in range(1, 7)},
                  "uniformity_p": uniformity_p(faces)})
        return {
            "rolls": len(self.rolls), **drawn,
            "median_generation_cycles": med([r.generation_cycles for r in self.rolls]),
            "median_display_cycles": med([r.display_cycles for r in self.rolls]),
            "median_press_to_display_ms": med([r.press_to_display_ms(self.clock_hz)
                                               for r in pressed]),
            # where a press's time goes: the wake-up from standby, the debounce (to the roll's
            # start), generating the picture, sending it (medians, ms at the core clock)
            "median_debounce_ms": med([(r.start_cycle - r.press_cycle - r.wake_cycles) /
                                       self.clock_hz * 1e3 for r in pressed]),
            "median_i2c_wire_ms": med([r.i2c_wire_ms for r in self.rolls]),
            "median_wake_ms": med([r.wake_cycles / self.clock_hz * 1e3 for r in pressed]),
            "display_woke": sum(r.display_woke for r in self.rolls),
            "median_press_to_visible_after_timeout_ms": med(
                [(r.visible_cycle - r.press_cycle) / self.clock_hz * 1e3 for r in pressed
                 if r.display_woke]),
            "display_timed_out_s": self.timed_out_after(),
            "sleeps": len(self.sleeps),
            "session": self.budget_dict(),
            "i2c_bytes_per_roll": med([r.i2c_bytes for r in self.rolls]),
            "scl_hz": self.scl_hz, "flash": self.flash, "ram": self.ram}

    def budget_dict(self) -> dict:
        b = session_budget(self.sleeps, self.display_history, self.end_cycle, self.clock_hz)
        return {"seconds": b.seconds, "awake_s": b.awake_s, "standby_s": b.standby_s,
                "display_on_s": b.display_on_s,
                "uC": {k: v * 1e6 for k, v in b.charge.items()}, "total_uC": b.total * 1e6}

    def text(self) -> str:
        s = self.summary()
        if self.firmware.is_text:
            lines = [f"{s['rolls']} emulated presses on the {self.firmware.mcu}: lines of "
                     + ", ".join(str(n) for n in s["line_lengths"]) + " characters"]
        else:
            lines = [f"{s['rolls']} emulated rolls on the {self.firmware.mcu}: faces "
                     + ", ".join(f"{k}: {v}" for k, v in s["faces"].items())
                     + f" (chi-square uniformity p = {s['uniformity_p']:.3f})"]
        if s["median_generation_cycles"] is not None:
            lines.append(f"  generation {s['median_generation_cycles']:,.0f} cycles "
                         f"({s['median_generation_cycles'] / self.clock_hz * 1e3:.1f} ms), "
                         f"display transfer {s['median_display_cycles']:,.0f} cycles "
                         f"({s['median_display_cycles'] / self.clock_hz * 1e3:.1f} ms; "
                         f"{s['i2c_bytes_per_roll']:.0f} I2C bytes, bus busy "
                         f"{s['median_i2c_wire_ms']:.1f} ms at {s['scl_hz'] / 1e3:.0f} kHz), "
                         "medians")
        if s["median_press_to_display_ms"] is not None:
            ms = lambda c: c / self.clock_hz * 1e3  # noqa: E731
            lines.append(f"  press to finished display: {s['median_press_to_display_ms']:.1f} ms "
                         f"at {self.clock_hz / 1e6:.0f} MHz, median: wake-up from standby "
                         f"{s['median_wake_ms']:.1f} ms, debounce "
                         f"{s['median_debounce_ms']:.1f} ms, generation "
                         f"{ms(s['median_generation_cycles']):.1f} ms, display transfer "
                         f"{ms(s['median_display_cycles']):.1f} ms")
        if s["display_woke"] and s["median_press_to_visible_after_timeout_ms"] is not None:
            lines.append(f"  after a display timeout ({s['display_woke']} rolls) the panel lights "
                         f"{T_AF_MS:.0f} ms after it is turned on: press to a visible face "
                         f"{s['median_press_to_visible_after_timeout_ms']:.1f} ms, median")
        b = s["session"]
        lines.append(f"  session: {b['seconds']:.2f} s emulated, awake {b['awake_s']:.2f} s, "
                     f"standby {b['standby_s']:.2f} s ({s['sleeps']} sleeps), display on "
                     f"{b['display_on_s']:.2f} s; {b['total_uC']:,.0f} uC by the datasheets' "
                     "currents")
        if s["display_timed_out_s"] is not None:
            lines.append(f"  the display turned off {s['display_timed_out_s']:.2f} s after the "
                         "last roll's release")
        if self.uart:
            printed, errors = self.uart.splitlines(), self.uart_errors()
            lines.append(f"  USART1 printed {len(printed)} lines, e.g. {printed[0]!r}"
                         + (f"; the LED changed {self.led_changes} times" if self.led_changes
                            else "") + ": " + ("; ".join(errors[:3]) if errors else
                                               "they agree with the rolls"))
        r, f = self.ram, self.flash
        lines.append(f"  flash {f['total']:,} of {f['size']:,} bytes; RAM {r['total']:,} of "
                     f"{r['size']:,} bytes (peak stack {r['stack_peak']:,} measured)")
        return "\n".join(lines)


def uniformity_p(faces: list[int]) -> float:
    """p-value of Pearson's chi-square test that faces 1..6 are uniform (5 degrees of
    freedom); 1.0 for no rolls."""
    if not faces:
        return 1.0
    return float(chisquare([faces.count(f) for f in range(1, 7)]).pvalue)


def expected_frame(model, state: int, dither: str) -> tuple[int, np.ndarray]:
    """(face 1..6, (64, 128) bool frame) the firmware must draw for a roll starting from PRNG
    state ``state``: the face by rejection sampling (xorshift32 >> 29, again while >= 6), the
    latent from the same state, the reference's image scaled to 64x64 and dithered as
    ``dither`` says (display.thresholds), at display columns 32..95."""

    s = np.array([state], dtype=np.uint32)
    while True:
        s = xorshift32(s)
        v = int(s[0]) >> 29
        if v < 6:
            break
    z, _ = model.input.draw(s, np.array([v]))
    img = reference.generate(model, z, np.array([v]))[0]
    frame = np.zeros((64, 128), dtype=bool)
    frame[:, LEFT_COLUMN:LEFT_COLUMN + 64] = display_bits(img, dither)
    return v + 1, frame


def expected_line(model, state: int) -> tuple[list[int], np.ndarray]:
    """(tokens, (64, 128) bool frame) the text die must draw for a roll starting from PRNG
    state ``state``: the reference's line from that state, drawn as font.render_line lays it
    out."""
    tokens = reference.generate_text(model, [0], states=[state])[0][0]
    line = [int(t) for t in reference.line_tokens(tokens) if t]  # without its END
    table, rows = glyphs(model.input.vocab)
    return line, render_line(table, rows, line)


def drawn_lines(run: DieRun) -> list[str]:
    """The text die's lines, roll by roll: the reference's line of each roll's PRNG state."""
    model = read_export(run.firmware.export)
    return [reference.decode(model, expected_line(model, r.state)[0]) for r in run.rolls]


def roll_die(die_dir: str | Path, rolls: int | None = None, presses: list[tuple[float, float]]
             | None = None, seed: int = 0, gap_ms: float = 30.0, hold_ms: float = 60.0,
             max_insns: int | None = None, progress: bool = False) -> DieRun:
    """Emulate the die firmware in ``die_dir`` (die.elf, die.json) for ``rolls`` rolls (the one
    at start-up included) or the press script ``presses`` ((start, length) in ms from reset);
    ``seed`` seeds the ADC's noise and the display's power-up memory; ``max_insns`` (default:
    20M per roll or press, and 50M) bounds a firmware that stops rolling. ``progress``: a bar
    of the rolls on a terminal (about a second each), a line per 100 rolls elsewhere."""
    die_dir = Path(die_dir)
    fw = DieFirmware.load(die_dir / "die.json")
    chip = get_chip(fw.mcu)
    clock = chip.clock_hz
    ms = clock / 1e3
    if (rolls is None) == (presses is None):
        raise BitmcuError("give the number of rolls or a press script, not both")
    if rolls is not None and rolls < 1:
        raise BitmcuError(f"--emulate {rolls}: must be >= 1 roll")
    if max_insns is None:  # a roll runs ~2.5M instructions (generation, display, polling)
        max_insns = 50_000_000 + 20_000_000 * (rolls if rolls is not None else len(presses))
    m = Machine(die_dir / "die.elf", chip)
    if "die_state" not in m.symbols:
        raise BitmcuError(f"{die_dir / 'die.elf'}: no symbol die_state; not a bitmcu die firmware")
    display = SSD1306(seed=seed)
    opt = DieOptions(**fw.options)
    p = Peripherals(m, display, opt.pin, adc_seed=seed, led=led_pin(opt.led),
                    power=opt.power_pin)
    if presses is not None:
        if any(n <= 0 or a < 0 for a, n in presses):
            raise BitmcuError("presses: each (start, length) in ms needs start >= 0, length > 0")
        p.presses = [Press(int(a * ms), int(n * ms)) for a, n in sorted(presses)]
        if any(q.at < r.at + r.hold for r, q in itertools.pairwise(p.presses)):
            raise BitmcuError("presses: they overlap; a press starts after the last one ended")
        last = max((a + n for a, n in presses), default=0.0)
        p.deadline = (last + 2 * fw.options["debounce_ms"] + 5) * ms
    out: list[Roll] = []
    dropped: list[int] = []
    cur: dict = {}
    patterns: list = []

    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=rolls or len(presses) + 1, desc="rolls", unit="roll", leave=False)

    def advance() -> None:
        if bar is not None:
            bar.update(1)
        elif len(out) % 100 == 0:  # a log: a line per hundred rolls
            print(f"bitmcu: {len(out)} rolls emulated", file=sys.stderr, flush=True)

    def read_state() -> int:
        return int.from_bytes(m.uc.mem_read(m.symbols["die_state"], 4), "little")

    def on_marker(event, arg, cyc, ins):
        if event == EV_ROLL:
            press = next((q.at for q in reversed(p.presses) if q.at <= cyc), None)
            if out and press is not None and out[-1].press_cycle == press:
                press = None  # a second roll from one press cannot be
            cur.clear()
            woke = next((sl for sl in reversed(p.sleeps) if sl.cause == "button"
                         and press is not None and sl.end >= press), None)
            cur.update(index=arg, start=cyc, state=read_state(), press=press, tx=0.0,
                       tx_at=None, bytes=p.i2c.wire_bytes, wire=p.i2c.wire_cycles,
                       wake=WAKE_US[woke.mode] * ms / 1e3 if woke else 0.0,
                       display_off=not display.on)
        elif event == EV_PATTERN:
            patterns.append(display.pixels())
        elif event == EV_TX_START and cur:
            cur["tx_at"] = cyc
        elif event == EV_TX_END and cur and cur["tx_at"] is not None:
            cur["tx"] += cyc - cur["tx_at"]
            cur["tx_at"] = None
        elif event == EV_DROP and cur:
            dropped.append(cur["index"])
            cur.clear()
            if rolls is not None:
                next_press(cyc)
        elif event == EV_END and cur:
            if arg & ENGINE_ERROR:
                m.fail(f"roll {cur['index']}: the engine returned {status_text(arg & 0xFF)}")
                return
            r = Roll(cur["index"], arg, cur["state"], cur["press"],
                     int(cur["start"]), int(cyc), int(cur["tx"]),
                     p.i2c.wire_bytes - cur["bytes"],
                     (p.i2c.wire_cycles - cur["wire"]) / ms, display.pixels(),
                     round(cur["wake"]), cur["display_off"],
                     int(max(cyc, display.on_since + T_AF_MS * ms) if cur["display_off"]
                         else cyc))
            out.append(r)
            cur.clear()
            if progress:
                advance()
            if rolls is not None:
                next_press(cyc)

    def next_press(cyc) -> None:
        if len(out) >= rolls:
            # no press comes: on until the firmware sleeps for good (the display's timeout
            # included)
            p.deadline = math.inf
            return
        # gap_ms after the roll, or after the last press was let go where the roll ended
        # sooner (the text die's): the firmware waits for the button to be up before it takes
        # a press
        up = max([cyc] + [q.at + q.hold for q in p.presses[-1:]])
        p.presses.append(Press(int(up + gap_ms * ms), int(hold_ms * ms)))

    m.on_marker = on_marker
    try:
        m.run(max_insns)
    finally:
        if bar is not None:
            bar.close()
    if rolls is not None and len(out) < rolls:
        raise BitmcuError(f"{die_dir / 'die.elf'}: {len(out)} of {rolls} rolls after "
                          f"{max_insns:,} instructions")
    flash, ram = m.memory_use()
    p.usart.flush()
    scl = clock / p.i2c.period() if p.i2c.regs[0x1C] else float("nan")
    return DieRun(fw, out, ram, flash, clock, scl, patterns, p.sleeps, display.history,
                  m.time(), p.usart.text, len(p.led_changes), len(dropped))


def check_frames(run: DieRun) -> list[int]:
    """Indices of the rolls whose frame or face differs from the numpy reference's."""

    model = read_export(run.firmware.export)
    bad = []
    for r in run.rolls:
        if run.firmware.is_text:
            line, frame = expected_line(model, r.state)
            if len(line) != r.face or not np.array_equal(frame, r.frame):
                bad.append(r.index)
            continue
        face, frame = expected_frame(model, r.state, run.firmware.options["dither"])
        if face != r.face or not np.array_equal(frame, r.frame):
            bad.append(r.index)
    return bad


def write_frames(run: DieRun, out: str | Path, scale: int = 3) -> dict[str, str]:
    """Every frame as PNG, a contact sheet of all rolls and an animated GIF, into ``out``."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pics = []
    for r in run.rolls:
        im = Image.fromarray((r.frame * 255).astype(np.uint8)).resize(
            (128 * scale, 64 * scale), Image.NEAREST)
        im.save(out / f"roll-{r.index:04d}.png")
        pics.append(im)
    cols = min(len(pics), 8)
    rows = math.ceil(len(pics) / cols)
    sheet = Image.new("L", (cols * (128 * scale + 4) + 4, rows * (64 * scale + 4) + 4), 96)
    for k, im in enumerate(pics):
        r, c = divmod(k, cols)
        sheet.paste(im, (4 + c * (128 * scale + 4), 4 + r * (64 * scale + 4)))
    sheet.save(out / "contact_sheet.png")
    pics[0].save(out / "rolls.gif", save_all=True, append_images=pics[1:], duration=700, loop=0)
    report = {"summary": run.summary(), "rolls": [
        {k: v for k, v in asdict(r).items() if k != "frame"} for r in run.rolls]}
    (out / "rolls.json").write_text(json.dumps(report, indent=2) + "\n")
    return {"frames": str(out / "roll-*.png"), "sheet": str(out / "contact_sheet.png"),
            "gif": str(out / "rolls.gif"), "json": str(out / "rolls.json")}


def judge_frames(run: DieRun, oracles: list[str | Path] | None = None) -> dict:
    """Every judge's reading of every frame (averaged back to the model's size) against the face
    the firmware drew: each oracle (default: the shipped dice oracles) and the pip counter, and
    the strict figure (every judge reads the face drawn), per face and overall, and how many
    frames of a face are distinct."""

    side = run.firmware.image_side
    cfg = load_config(None, ["data.dataset=dice", f"data.size={side}"])
    if oracles:
        models = {str(o): load_oracle(o, cfg)[0] for o in oracles}
    else:  # the shipped ones that read pictures of this side (else the pip counter alone)
        models = {}
        for o in default_oracles(cfg):
            try:
                models[str(o)] = load_oracle(o, cfg)[0]
            except BitmcuError:
                continue
    images = np.stack([frame_image(r.frame, side) for r in run.rolls])
    faces = np.array([r.face for r in run.rolls])
    right = {name: r + 1 == faces for name, r in read_all(models, images, dice=True)[0].items()}
    strict = np.logical_and.reduce(list(right.values()))
    per = {}
    for f in range(1, 7):
        sel = faces == f
        frames = {run.rolls[i].frame.tobytes() for i in np.nonzero(sel)[0]}
        per[str(f)] = {"rolls": int(sel.sum()),
                       "judges": {n: float(ok[sel].mean()) if sel.any() else None
                                  for n, ok in right.items()},
                       "strict": float(strict[sel].mean()) if sel.any() else None,
                       "distinct": len(frames) / max(1, int(sel.sum()))}
    return {"judges": {n: float(ok.mean()) for n, ok in right.items()},
            "strict": float(strict.mean()), "per_face": per}
