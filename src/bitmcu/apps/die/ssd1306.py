"""A model of the SSD1306 128x64 OLED controller as the die drives it over I2C.

It decodes the byte stream of each I2C write transaction (a control byte: Co bit 7, D/C# bit 6;
then commands or display data) into its 128 x 8 pages of display memory, in the three memory
addressing modes. Commands the model knows are applied or recorded; any other byte in the
command stream is reported (:class:`DisplayError`), never ignored.

For the energy model it keeps a history of what draws current: (time, display on (AFh/AEh),
charge pump on (8Dh 14h/10h), lit pixels, supply on), a row at each change, the time from
``clock`` (the emulator's cycles, ``hz`` a second).

Its supply may be switched (:meth:`power`: a P-MOSFET on a GPIO pin, ``bitmcu die
--display-power``). Switched on, the controller starts from reset (registers at their defaults,
display memory undefined) and takes commands once ``POWER_UP_MS`` have passed (the supply
settled, the module's reset released). Switched off, it must have been put through the power-off
sequence of the datasheet (section 8.9.2: AEh, 8Dh 10h, then the supply off tOFF = 100 ms
later); a transaction while it is unpowered, too soon after power-up, or a supply cut that skips
the sequence stops the run (:class:`DisplayError`).
"""

from __future__ import annotations

import numpy as np

from ...core.errors import BitmcuError

WIDTH, PAGES = 128, 8
T_OFF_MS = 100.0  # SSD1306 DS section 8.9.2: the charge pump off this long before VBAT goes
POWER_UP_MS = 10.0  # a switched supply: settled and the module's RES# released (its RC), with
#                     margin; the controller itself needs 3 us + 3 us (t1, t2)

# commands with their number of argument bytes (those not listed here take none)
ARGS = {0x81: 1, 0x20: 1, 0x21: 2, 0x22: 2, 0xA8: 1, 0xD3: 1, 0xD5: 1, 0xD9: 1, 0xDA: 1,
        0xDB: 1, 0x8D: 1}
SIMPLE = set(range(0x00, 0x20)) | set(range(0x40, 0x80)) | set(range(0xB0, 0xB8)) | {
    0xA0, 0xA1, 0xA4, 0xA5, 0xA6, 0xA7, 0xAE, 0xAF, 0xC0, 0xC8, 0x2E, 0xE3}


class DisplayError(BitmcuError):
    """The display received something the model does not support."""


class SSD1306:
    def __init__(self, address: int = 0x3C, seed: int = 0):
        self.address = address
        self.rng = np.random.default_rng(seed)
        self.clock = lambda: 0.0
        self.hz = 48e6  # clock() units per second
        self.history: list[tuple[float, bool, bool, int, bool]] = []
        self._wrote = False
        self.powered = True  # the supply (always, unless a switch turns it off)
        self.powered_at = -np.inf
        self._reset()

    def _reset(self) -> None:
        """The controller after reset (power-up): registers at their defaults, display memory
        undefined."""
        # power-up display memory is undefined: random, so that a driver that does not clear
        # the screen shows it
        self.ram = self.rng.integers(0, 256, (PAGES, WIDTH), dtype=np.uint8)
        self.on = False
        self.mode = 2  # page addressing after reset
        self.col_lo, self.col_hi, self.page_lo, self.page_hi = 0, WIDTH - 1, 0, PAGES - 1
        self.col, self.page = 0, 0
        self.seg_remap = False  # 0xA1: column 127 -> SEG0
        self.com_reverse = False  # 0xC8: scan from COM63
        self.inverted = False
        self.entire_on = False
        self.settings: dict[int, tuple[int, ...]] = {}
        self.data_bytes = 0
        self.command_bytes = 0
        self._cmd: list[int] = []
        self.pump = False  # the charge pump (8Dh 14h) after reset: off
        self.on_since = 0.0  # the last AFh that turned the display on (the panel lights T_AF
        #                      later: SSD1306 DS section 8.9.2)
        self.pump_off_at: float | None = None  # the charge pump last turned off (None: not on
        #                                        since power-up)

    def _ms_since(self, t0: float) -> float:
        return (self.clock() - t0) / self.hz * 1e3

    def power(self, on: bool) -> None:
        """The supply switched on or off (a GPIO pin's switch)."""
        if on == self.powered:
            return
        t = self.clock()
        if on:
            self._reset()
            self.powered, self.powered_at = True, t
        else:
            if self.on or self.pump:
                raise DisplayError("SSD1306: its supply was switched off while the display or its "
                                   "charge pump was on; the power-off sequence sends AEh and "
                                   "8Dh 10h first (SSD1306 DS section 8.9.2)")
            if self.pump_off_at is not None and self._ms_since(self.pump_off_at) < T_OFF_MS:
                raise DisplayError(f"SSD1306: its supply was switched off "
                                   f"{self._ms_since(self.pump_off_at):.1f} ms after the "
                                   f"charge pump; the datasheet waits tOFF = {T_OFF_MS:.0f} ms "
                                   "(section 8.9.2)")
            self.powered = False
        self._record()

    # -- the I2C side: one write transaction at a time
    def begin(self) -> None:
        if not self.powered:
            raise DisplayError("SSD1306: addressed on I2C while its supply is switched off")
        since = self._ms_since(self.powered_at)
        if since < POWER_UP_MS:
            raise DisplayError(f"SSD1306: addressed {since:.2f} ms after its supply was switched "
                               f"on; it takes commands {POWER_UP_MS:g} ms after (the supply "
                               "settled, the module's reset released)")
        self._control, self._expect_control = None, True

    def write(self, byte: int) -> None:
        if self._expect_control:
            if byte & 0x3F:
                raise DisplayError(f"SSD1306: control byte 0x{byte:02x} is not one of 0x00, "
                                   "0x40, 0x80, 0xC0 (Co and D/C# bits only)")
            self._control = byte
            self._expect_control = False
            return
        if self._control & 0x40:
            self._data(byte)
        else:
            self._command(byte)
        if self._control & 0x80:  # Co = 1: another control byte follows
            self._expect_control = True

    def end(self) -> None:
        if self._cmd:
            raise DisplayError(f"SSD1306: command 0x{self._cmd[0]:02x} ended after "
                               f"{len(self._cmd) - 1} of its {ARGS[self._cmd[0]]} argument bytes")
        if self._wrote:
            self._wrote = False
            self._record()

    def lit(self) -> int:
        """Pixels the panel lights (the shown picture's)."""
        return int(np.count_nonzero(self.pixels()))

    def _record(self) -> None:
        row = (self.clock(), self.on, self.pump, self.lit(), self.powered)
        if not self.history or self.history[-1][1:] != row[1:]:
            self.history.append(row)

    # -- commands and data
    def _command(self, byte: int) -> None:
        self.command_bytes += 1
        if self._cmd:
            self._cmd.append(byte)
            if len(self._cmd) == ARGS[self._cmd[0]] + 1:
                self._apply(self._cmd[0], tuple(self._cmd[1:]))
                self._cmd = []
            return
        if byte in ARGS:
            self._cmd = [byte]
        elif byte in SIMPLE:
            self._apply(byte, ())
        else:
            raise DisplayError(f"SSD1306: command 0x{byte:02x} is not supported by the model")

    def _apply(self, c: int, args: tuple[int, ...]) -> None:
        if c == 0x20:
            if args[0] & 3 == 3:
                raise DisplayError("SSD1306: memory addressing mode 3 is invalid")
            self.mode = args[0] & 3
        elif c == 0x21:
            self.col_lo, self.col_hi = args[0] & 127, args[1] & 127
            self.col = self.col_lo
        elif c == 0x22:
            self.page_lo, self.page_hi = args[0] & 7, args[1] & 7
            self.page = self.page_lo
        elif 0xB0 <= c <= 0xB7:
            self.page = c & 7
        elif c <= 0x0F:
            self.col = (self.col & 0xF0) | c
        elif c <= 0x1F:
            self.col = (self.col & 0x0F) | ((c & 0x07) << 4)
        elif c in (0xAE, 0xAF):
            if c == 0xAF and not self.on:
                self.on_since = self.clock()
            self.on = c == 0xAF
            self._record()
        elif c == 0x8D:
            if args[0] & ~0x04 != 0x10:
                raise DisplayError(f"SSD1306: charge pump setting 0x{args[0]:02x} is not 0x10 "
                                   "(off) or 0x14 (on)")
            if self.pump and not args[0] & 0x04:
                self.pump_off_at = self.clock()
            self.pump = bool(args[0] & 0x04)
            self.settings[c] = args
            self._record()
        elif c in (0xA0, 0xA1):
            self.seg_remap = c == 0xA1
        elif c in (0xC0, 0xC8):
            self.com_reverse = c == 0xC8
        elif c in (0xA6, 0xA7):
            self.inverted = c == 0xA7
        elif c in (0xA4, 0xA5):
            self.entire_on = c == 0xA5
        else:
            self.settings[c & 0xC0 if 0x40 <= c < 0x80 else c] = args or (c,)

    def _data(self, byte: int) -> None:
        self.data_bytes += 1
        self._wrote = True
        self.ram[self.page, self.col] = byte
        if self.mode == 0:  # horizontal: along the columns, then the next page
            if self.col == self.col_hi:
                self.col = self.col_lo
                self.page = self.page_lo if self.page == self.page_hi else self.page + 1
            else:
                self.col += 1
        elif self.mode == 1:  # vertical: down the pages, then the next column
            if self.page == self.page_hi:
                self.page = self.page_lo
                self.col = self.col_lo if self.col == self.col_hi else self.col + 1
            else:
                self.page += 1
        else:  # page addressing: along the page, wrapping within it
            self.col = (self.col + 1) & 127

    # -- what a viewer sees
    def pixels(self) -> np.ndarray:
        """(64, 128) bool picture as seen on the usual module (0xA1 and 0xC8 show the memory
        upright: column 0 at the left, page 0 at the top); off = all dark."""
        bits = np.unpackbits(self.ram[:, :, None], axis=2, bitorder="little")  # (8, 128, 8)
        img = bits.transpose(0, 2, 1).reshape(64, WIDTH).astype(bool)
        if not self.seg_remap:
            img = img[:, ::-1]
        if not self.com_reverse:
            img = img[::-1]
        if self.entire_on:
            img = np.ones_like(img)
        if self.inverted:
            img = ~img
        return img if self.on else np.zeros_like(img)
