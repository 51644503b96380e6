"""The die's energy budget: the emulated timeline (when the chip ran, slept in standby or woke,
and what the display showed) times the currents the datasheets give, and the battery life it
implies at a stated use. Every current, its conditions and its source are in ``CURRENTS``;
docs/die-energy.md explains the model and its limits.

Sources:
- [CH32V003 DS] WCH, CH32V003 datasheet V1.2 (数据手册), section 3.3: tables 3-6-1 (run),
  3-7-1 (sleep), 3-8 (standby), 3-12 (LSI), 3-13 (wake-up times); VDD = 3.3 V, typical values
  measured by WCH.
- [SSD1306 DS] Solomon Systech, SSD1306 Rev 1.5 (Aug 2010): table 12-1 (DC characteristics),
  section 8.8 (ISEG = contrast / 256 x IREF x 8, IREF 12.5 uA recommended), section 8.10 (the
  charge pump makes VCC = 7.5 V from VBAT), section 8.9.2 (the power-off sequence).
- [AO3401A DS] Alpha & Omega Semiconductor, AO3401A 30 V P-channel MOSFET, Rev 3 (Mar 2011):
  electrical characteristics, IDSS (zero gate voltage drain current) and RDS(ON) at VGS = -2.5 V;
  the high-side switch of ``--display-power``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ...target.peripherals import WAKE_US

DAY_S = 86_400.0
CR2032_MAH = 220.0
SUPPLY_V = 3.3  # the datasheets' conditions


@dataclass(frozen=True)
class Current:
    amps: float
    what: str
    source: str


CURRENTS = {
    "mcu_run": Current(6.57e-3, "CH32V003 running at 48 MHz (HSI x 2 PLL), every peripheral clock "
                       "on (4.16 mA with all off; the die's few clocks lie between: the larger "
                       "figure bounds them)", "[CH32V003 DS] table 3-6-1, VDD 3.3 V, typical"),
    "mcu_sleep": Current(4.31e-3, "CH32V003 in sleep mode at 48 MHz (HSI), every peripheral on",
                         "[CH32V003 DS] table 3-7-1, typical"),
    "mcu_standby_lsi": Current(10.26e-6, "CH32V003 in standby, LSI on (the auto-wakeup counts)",
                               "[CH32V003 DS] table 3-8, VDD 3.3 V, typical"),
    "mcu_standby": Current(8.76e-6, "CH32V003 in standby, LSI off",
                           "[CH32V003 DS] table 3-8, VDD 3.3 V, typical"),
    "oled_idd": Current(50e-6, "SSD1306 logic (IDD), display on",
                        "[SSD1306 DS] table 12-1, typical (VDD 2.8 V, all on, no panel)"),
    "oled_icc": Current(430e-6, "SSD1306 driver supply (ICC from VCC), display on",
                        "[SSD1306 DS] table 12-1, typical (contrast FFh, no panel)"),
    "oled_iseg_max": Current(100e-6, "segment current of a lit pixel at contrast FFh "
                             "(ISEG = contrast / 256 x IREF x 8, IREF 12.5 uA)",
                             "[SSD1306 DS] table 12-1 and section 8.8"),
    "oled_sleep": Current(20e-6, "SSD1306 display off: IDD,SLEEP + ICC,SLEEP, each at most 10 uA "
                          "(the datasheet gives maxima only: a bound)",
                          "[SSD1306 DS] table 12-1, maximum"),
    "switch_off": Current(1e-6, "the display's supply switched off (--display-power): the "
                          "P-MOSFET's leakage, IDSS at most 1 uA at VDS = -30 V (the die's 3.3 V "
                          "leaks less); the module (its regulator, pull-ups and the SSD1306) "
                          "draws nothing", "[AO3401A DS] IDSS, TJ 25 C, maximum"),
}
CONTRAST = 0xCF  # die.c's init sequence (81h CFh)
MUX = 64  # rows driven one at a time: a lit pixel draws ISEG for 1/64 of a frame
PUMP_GAIN = 2.0  # the charge pump doubles its input: the supply gives twice VCC's current


def display_amps(on: bool, pump: bool, lit: int, powered: bool = True) -> float:
    """The SSD1306's current from the supply: switched off (the switch's leakage), off (sleep),
    or on with ``lit`` pixels; the VCC side through the charge pump (on)."""
    c = CURRENTS
    if not powered:
        return c["switch_off"].amps
    if not on:
        return c["oled_sleep"].amps
    vcc = c["oled_icc"].amps + c["oled_iseg_max"].amps * CONTRAST / 256 * lit / MUX
    return c["oled_idd"].amps + (PUMP_GAIN * vcc if pump else 0.0)


@dataclass
class Budget:
    """Charge (coulombs) of each part over an emulated session, and the session's length."""
    seconds: float
    charge: dict[str, float]  # mcu_run, mcu_wake, mcu_standby, display_on, display_off
    awake_s: float
    standby_s: float
    display_on_s: float

    @property
    def total(self) -> float:
        return sum(self.charge.values())


def session_budget(sleeps, history, end_cycle: float, clock_hz: float) -> Budget:
    """The charge of an emulated session from reset to ``end_cycle``: ``sleeps`` (the
    peripherals' Sleep records) and the display's ``history`` rows (time, on, pump, lit,
    powered)."""
    c = CURRENTS
    q = dict.fromkeys(("mcu_run", "mcu_wake", "mcu_standby", "display_on", "display_off"), 0.0)
    asleep_s = wake_s = standby_s = 0.0
    for s in sleeps:
        edge = s.end - WAKE_US[s.mode] * 1e-6 * clock_hz  # the event that woke the chip
        asleep = (min(edge, end_cycle) - min(s.start, end_cycle)) / clock_hz
        wake = (min(s.end, end_cycle) - min(edge, end_cycle)) / clock_hz
        if s.mode == "standby":
            amps = c["mcu_standby_lsi" if s.lsi else "mcu_standby"].amps
            standby_s += asleep
        else:
            amps = c["mcu_sleep"].amps
        q["mcu_standby"] += amps * asleep
        q["mcu_wake"] += c["mcu_run"].amps * wake
        asleep_s += asleep
        wake_s += wake
    total_s = end_cycle / clock_hz
    awake_s = total_s - asleep_s - wake_s
    q["mcu_run"] = c["mcu_run"].amps * awake_s
    on_s = 0.0
    rows = list(history) + [(end_cycle, None, None, None, None)]
    for (t0, on, pump, lit, powered), (t1, *_) in itertools.pairwise(rows):
        dt = (min(t1, end_cycle) - min(t0, end_cycle)) / clock_hz
        if on:
            q["display_on"] += display_amps(True, pump, lit) * dt
            on_s += dt
        else:
            q["display_off"] += display_amps(False, False, 0, powered) * dt
    if history:  # before the first command: the display is off after reset
        q["display_off"] += c["oled_sleep"].amps * min(history[0][0], end_cycle) / clock_hz
    return Budget(total_s, q, awake_s, standby_s, on_s)


@dataclass
class Projection:
    """Battery life at a stated use, from one roll's measured parts."""
    rolls_per_day: float
    timeout_s: float
    battery_mah: float
    roll_coulombs: float  # the chip awake for a press: wake-up, debounce, roll, release
    roll_awake_s: float
    shown_coulombs: float  # the face shown until the timeout (display and standby with LSI)
    idle_amps: float  # display off, chip in standby
    day: dict[str, float]  # coulombs per day: rolls, faces shown, idle
    switched: bool = False  # the display's supply is switched off at idle
    basis: str = ""  # which rolls the per-roll figures are the medians of

    @property
    def per_roll_coulombs(self) -> float:
        return self.roll_coulombs + self.shown_coulombs

    @property
    def day_coulombs(self) -> float:
        return sum(self.day.values())

    @property
    def days(self) -> float:
        return self.battery_mah * 3.6 / self.day_coulombs

    def to_dict(self) -> dict:
        return {"rolls_per_day": self.rolls_per_day, "display_timeout_s": self.timeout_s,
                "battery_mah": self.battery_mah, "supply_v": SUPPLY_V,
                "roll_uC": self.roll_coulombs * 1e6, "roll_awake_ms": self.roll_awake_s * 1e3,
                "face_shown_uC": self.shown_coulombs * 1e6,
                "energy_per_roll_mJ": self.per_roll_coulombs * SUPPLY_V * 1e3,
                "idle_uA": self.idle_amps * 1e6, "display_switched_off": self.switched,
                "roll_basis": self.basis,
                "average_uA": self.day_coulombs / DAY_S * 1e6,
                "mAh_per_day": {k: v / 3.6 for k, v in self.day.items()},
                "battery_days": self.days, "battery_months": self.days / 30.44}

    def text(self) -> str:
        d = self.to_dict()
        return (f"  energy: {d['energy_per_roll_mJ']:.2f} mJ per roll at {SUPPLY_V} V "
                f"({d['roll_uC']:.0f} uC awake for {d['roll_awake_ms']:.0f} ms"
                + (f", the median of {self.basis}" if self.basis else "") + ", "
                f"{d['face_shown_uC']:.0f} uC showing the face for {self.timeout_s:.1f} s); "
                f"idle {d['idle_uA']:.2f} uA (display "
                f"{'switched off' if self.switched else 'asleep'}, chip in standby)\n"
                f"  battery: {self.battery_mah:g} mAh lasts {d['battery_days']:.0f} days "
                f"({d['battery_months']:.1f} months) at {self.rolls_per_day:g} rolls a day, each "
                f"face shown until the timeout (average {d['average_uA']:.1f} uA; by the "
                "datasheets' currents, docs/die-energy.md)")


def project(roll_coulombs: float, roll_awake_s: float, lit: float, timeout_s: float,
            awu_wakes: int, rolls_per_day: float = 20.0, battery_mah: float = CR2032_MAH,
            switch_after_s: float | None = None, basis: str = "") -> Projection:
    """Battery life: each roll ``roll_coulombs`` while awake for ``roll_awake_s``, then its face
    (``lit`` pixels) shown ``timeout_s`` with the chip in standby (LSI on, ``awu_wakes``
    wake-ups of 200 us), the rest of the day idle (display off, standby without the LSI). With
    a switched display supply (``switch_after_s``: the supply goes off this long after the
    display, in more auto-wakeup periods, the datasheet's tOFF), idle is the switch's leakage
    instead of the display's sleep current."""
    c = CURRENTS
    wake_s = WAKE_US["standby"] * 1e-6 * awu_wakes
    shown = (display_amps(True, True, lit) + c["mcu_standby_lsi"].amps) * timeout_s + \
        c["mcu_run"].amps * wake_s
    idle = c["mcu_standby"].amps + c["oled_sleep"].amps
    if switch_after_s is not None:
        shown += (c["oled_sleep"].amps + c["mcu_standby_lsi"].amps) * switch_after_s + \
            c["mcu_run"].amps * WAKE_US["standby"] * 1e-6
        idle = c["mcu_standby"].amps + c["switch_off"].amps
    busy_s = rolls_per_day * (roll_awake_s + timeout_s + (switch_after_s or 0.0))
    day = {"rolls": rolls_per_day * roll_coulombs, "faces shown": rolls_per_day * shown,
           "idle": idle * max(0.0, DAY_S - busy_s)}
    return Projection(rolls_per_day, timeout_s, battery_mah, roll_coulombs, roll_awake_s,
                      shown, idle, day, switch_after_s is not None, basis)


def plot_budget(p: Projection, path) -> None:
    """Where a day's charge goes (bars, mAh per day) and the battery life, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(p.day)
    mah = np.array([p.day[k] / 3.6 for k in names])
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    ax.barh(names, mah, color=["#c0392b", "#2980b9", "#7f8c8d"])
    for y, v in enumerate(mah):
        ax.text(v, y, f" {v:.3f} mAh ({100 * v / mah.sum():.0f}%)", va="center", fontsize=9)
    ax.set_xlim(0, mah.max() * 1.6)
    ax.set_xlabel("charge per day (mAh)")
    ax.set_title(f"{p.rolls_per_day:g} rolls a day, face shown {p.timeout_s:.1f} s: "
                 f"{p.battery_mah:g} mAh last {p.days:.0f} days ({p.days / 30.44:.1f} months)",
                 fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
