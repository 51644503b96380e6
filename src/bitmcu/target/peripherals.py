"""Models of the CH32V003 peripherals bitmcu's firmware touches (the die's, and every firmware's
clock, SysTick, USART1 and LED), mapped onto the emulator.

RCC (the clock tree's enable and ready flags, the LSI), FLASH (wait states), GPIO ports A, C and
D (the button: scripted presses; an LED pin: its changes recorded), AFIO (the EXTI lines'
ports), EXTI (event lines: the button's edges and the auto-wakeup), PWR (standby and the
auto-wakeup), PFIC_SCTLR (deep sleep, WFI as WFE, SETEVENT), I2C1 (master transmitter with the
status flags a polling driver waits on, timed by its SCL clock so that the transfer costs the
cycles it costs on the chip), ADC1 (a seeded noise sequence), USART1 (a transmitter on PD5,
timed by its baud rate, the text captured) and SysTick (an up-counter of the core clock).
Registers follow the CH32V003 reference manual's map. A read or write of a register no model
covers stops the run with an error naming the address, as does a sequence the I2C model does
not support.

Sleep (the firmware's wfi, with PFIC_SCTLR.WFITOWFE: a wait for an event; interrupts are not
modelled): an event pending since the last wait (an enabled EXTI line's edge, SETEVENT) ends the
wait at once; else the clock moves to the next event, plus the datasheet's wake-up time (table
3-13: 200 us from standby, 30 us from sleep). Standby (SLEEPDEEP with PWR_CTLR.PDDS) stops
every clock: SysTick stands still, and the chip wakes on the HSI (PLL off, PWR_CTLR reset), as
the reference manual says. Each sleep is recorded (:class:`Sleep`) for the energy model.

Time is the emulator's cycle count (the core clock, 48 MHz after the firmware's PLL set-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import BitmcuError

IO_BASE, IO_SIZE = 0x40000000, 0x24000  # APB1, APB2 and AHB peripherals up to FLASH
STK_BASE, STK_SIZE = 0xE000F000, 0x1000
PFIC_BASE, PFIC_SCTLR = 0xE000E000, 0xE000ED10
DMA_BASE = 0x40020000  # DMA1: channel 6 is I2C1 TX (reference manual table 8-2)
DMA_TCIF6 = 1 << 21
USART1_BASE = 0x40013800
PWR_BASE, EXTI_BASE, AFIO_EXTICR, RCC_RSTSCKR = 0x40007000, 0x40010400, 0x40010008, 0x40021024
SCTLR_SLEEPDEEP, SCTLR_WFITOWFE, SCTLR_SETEVENT = 1 << 2, 1 << 3, 1 << 5
EXTI_AWU_LINE = 9
EXTI_PORT = {"A": 0, "C": 2, "D": 3}  # AFIO_EXTICR's codes
LSI_HZ = 128_000
AWU_DIV = (1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10240, 61440)
WAKE_US = {"standby": 200.0, "sleep": 30.0}  # datasheet table 3-13 (tWUSTDBY, twusleep)


@dataclass
class Sleep:
    """One wait for an event: from the wfi (``start``) to awake again (``end``, the wake-up
    time included), in cycles; standby or sleep; whether the LSI ran; what woke the chip."""
    start: float
    end: float
    mode: str  # standby | sleep
    lsi: bool
    cause: str  # button | awu | event (SETEVENT)


@dataclass
class Press:
    """The button held down from `at` for `hold` cycles (bounces: extra (start, length) pairs
    in cycles, released during the press)."""
    at: int
    hold: int
    bounces: list[tuple[int, int]] = field(default_factory=list)


class Peripherals:
    """Every modelled register, dispatched by address; ``machine`` gives the time."""

    GPIO = {0x40010800: "A", 0x40011000: "C", 0x40011400: "D"}

    def __init__(self, machine, display=None, button: tuple[str, int] | None = None,
                 adc_seed: int = 0, led: tuple[str, int] | None = None,
                 power: tuple[str, int] | None = None):
        """``display``: the device on I2C1 (address, begin, write, end; None: no device);
        ``button``, ``led``: (port letter, pin) or None; ``power``: the pin whose P-MOSFET
        switches the display's supply (on while the pin is an output driven low; its gate is
        pulled up: off at reset) or None (always powered)."""
        self.m, self.display = machine, display
        self.button_port, self.button_pin = button or ("", 0)
        self.led = led
        self.power = power
        self.led_changes: list[tuple[float, int]] = []  # (cycle, level) at each change
        self.presses: list[Press] = []
        self.regs: dict[int, int] = {}
        self.adc_rng = np.random.default_rng(adc_seed)
        self.adc_value, self.adc_ready_at = 0, None
        self.stk_base, self.stk_zero = 0, 0.0
        self.deadline: float | None = None  # stop when the firmware reads the timer after it
        self.i2c = I2CMaster(self)
        self.sleeps: list[Sleep] = []
        self.event_seen = -1.0  # events up to this time are consumed (a wait ended on them)
        self.set_event_at: float | None = None  # SETEVENT's
        self.awu_start: float | None = None  # when the auto-wakeup was enabled
        self.usart = Usart(self)
        if display is not None:
            display.clock = self.now
            display.hz = machine.chip.clock_hz
            if power is not None:
                display.power(False)
        machine.on_wfi = self.wfi
        for base, size in ((IO_BASE, IO_SIZE), (STK_BASE, STK_SIZE), (PFIC_BASE, 0x1000)):
            machine.map_io(base, size, lambda o, s, b=base: self.read(b + o, s),
                           lambda o, s, v, b=base: self.write(b + o, s, v))

    def now(self) -> float:
        return self.m.time()

    def fail(self, message: str) -> int:
        self.m.fail(message)
        return 0

    def unknown(self, addr: int, what: str) -> int:
        return self.fail(f"the firmware {what} 0x{addr:08x}, a peripheral register no model "
                         "covers (modelled: RCC, FLASH, GPIOA/C/D, AFIO, EXTI events, PWR, "
                         "I2C1 with DMA1 channel 6, ADC1, USART1, SysTick, PFIC_SCTLR)")

    def button_down(self) -> bool:
        """Whether the button is down now; ``presses`` are in time order and do not overlap."""
        t = self.now()
        if not self.button_port:
            return False
        for p in reversed(self.presses):  # the latest that has begun decides
            if p.at <= t:
                return t < p.at + p.hold and not any(p.at + a <= t < p.at + a + n
                                                     for a, n in p.bounces)
        return False

    # ------------------------------------------------------------------ dispatch
    def read(self, addr: int, size: int) -> int:
        if size != 4 or addr & 3:
            return self.fail(f"the firmware read {size} byte(s) at 0x{addr:08x}; the modelled "
                             "peripherals take aligned 32-bit accesses")
        try:
            return self._read(addr)
        except BitmcuError as e:  # the I2C device's (the display model's)
            return self.fail(str(e))

    def write(self, addr: int, size: int, value: int) -> None:
        if size != 4 or addr & 3:
            self.fail(f"the firmware wrote {size} byte(s) at 0x{addr:08x}; the modelled "
                      "peripherals take aligned 32-bit accesses")
            return
        try:
            self._write(addr, value & 0xFFFFFFFF)
        except BitmcuError as e:  # the I2C device's (the display model's)
            self.fail(str(e))

    def _read(self, addr: int) -> int:
        base, off = addr & ~0x3FF, addr & 0x3FF
        if base == 0x40021000 and off in (0x00, 0x04, 0x14, 0x18, 0x1C):  # RCC
            v = self.regs.get(addr, {0x00: 0x3, 0x14: 0x14}.get(off, 0))
            if off == 0x00:  # ready flags follow their enables at once
                v = (v & ~((1 << 1) | (1 << 25))) | ((v & 1) << 1) | ((v >> 24 & 1) << 25)
            if off == 0x04:  # SWS follows SW
                v = (v & ~0xC) | ((v & 3) << 2)
            return v
        if addr == RCC_RSTSCKR:  # LSIRDY follows LSION at once
            v = self.regs.get(addr, 0x0C000000)
            return (v & ~2) | ((v & 1) << 1)
        if addr == 0x40022000:  # FLASH_ACTLR
            return self.regs.get(addr, 0)
        if base == PWR_BASE and off in (0x00, 0x04, 0x08, 0x0C, 0x10):
            return self.regs.get(addr, 0x3F if off == 0x0C else 0)
        if base == EXTI_BASE and off in (0x00, 0x04, 0x08, 0x0C, 0x14):
            return self.regs.get(addr, 0) if off != 0x14 else 0  # INTFR: no interrupts
        if addr == PFIC_SCTLR:
            return self.regs.get(addr, 0)
        if base in self.GPIO and off in (0x00, 0x08, 0x0C):
            if off == 0x08:  # INDR: pulled-up inputs read 1, the button pulls its pin low
                v = self.regs.get(base + 0x0C, 0) & 0xFF
                if self.GPIO[base] == self.button_port and self.button_down():
                    v &= ~(1 << self.button_pin)
                return v
            return self.regs.get(addr, 0x44444444 if off == 0 else 0)
        if base == 0x40010000 and off in (0x04, 0x08):  # AFIO_PCFR1, AFIO_EXTICR
            return self.regs.get(addr, 0)
        if base == 0x40005400:
            return self.i2c.read(off)
        if base == USART1_BASE:
            return self.usart.read(off)
        if base == DMA_BASE and off in (0x00, 0x6C, 0x70, 0x74, 0x78):
            if off == 0x00:  # INTFR: polled for TCIF6
                if not self.regs.get(DMA_BASE, 0) & DMA_TCIF6:
                    self.i2c.dma_wait()
                return self.regs.get(DMA_BASE, 0)
            if off == 0x70:
                return self.i2c.dma_left
            return self.regs.get(addr, 0)
        if base == 0x40012400 and off in (0x00, 0x08, 0x0C, 0x10, 0x2C, 0x34, 0x4C):
            return self._adc_read(addr, off)
        if addr in (STK_BASE, STK_BASE + 0x10):
            return self.regs.get(addr, 0)
        if addr == STK_BASE + 0x08:
            return self._systick()
        return self.unknown(addr, "read")

    def _write(self, addr: int, v: int) -> None:
        base, off = addr & ~0x3FF, addr & 0x3FF
        if base == 0x40021000 and off in (0x00, 0x04, 0x14, 0x18, 0x1C):
            self.regs[addr] = v
        elif addr in (0x40022000, RCC_RSTSCKR):
            self.regs[addr] = v
        elif base == PWR_BASE and off in (0x00, 0x08, 0x0C, 0x10):
            if off == 0x08:  # AWUCSR: the count starts when AWUEN goes 1
                was = self.regs.get(addr, 0) & 2
                self.awu_start = (self.awu_start if was else self.now()) if v & 2 else None
            self.regs[addr] = v
        elif base == EXTI_BASE and off in (0x00, 0x04, 0x08, 0x0C, 0x14):
            if off == 0x00 and v:
                self.fail(f"the firmware enabled EXTI interrupts (INTENR 0x{v:x}); the model "
                          "wakes the chip by events only (EVENR, WFI as WFE)")
            elif off != 0x14:
                self.regs[addr] = v
        elif addr == PFIC_SCTLR:
            if v & SCTLR_SETEVENT:
                self.set_event_at = self.now()
            self.regs[addr] = v & ~SCTLR_SETEVENT
        elif base in self.GPIO and off == 0x00:
            self.regs[addr] = v
            self._power_switch()
        elif base in self.GPIO and off in (0x0C, 0x10, 0x14):  # OUTDR, BSHR, BCR
            old = out = self.regs.get(base + 0x0C, 0)
            if off == 0x0C:
                out = v
            elif off == 0x10:  # set the low half's bits, reset the high half's
                out = (out | (v & 0xFFFF)) & ~(v >> 16)
            else:
                out &= ~(v & 0xFFFF)
            self.regs[base + 0x0C] = out & 0xFFFF
            if self.led and self.GPIO[base] == self.led[0] and (old ^ out) >> self.led[1] & 1:
                self.led_changes.append((self.now(), out >> self.led[1] & 1))
            self._power_switch()
        elif base == 0x40010000 and off in (0x04, 0x08):
            self.regs[addr] = v
        elif base == 0x40005400:
            self.i2c.write(off, v)
        elif base == USART1_BASE:
            self.usart.write(off, v)
        elif base == DMA_BASE and off in (0x04, 0x6C, 0x70, 0x74, 0x78):
            self._dma_write(addr, off, v)
        elif base == 0x40012400 and off in (0x00, 0x08, 0x0C, 0x10, 0x2C, 0x34):
            self._adc_write(addr, off, v)
        elif addr == STK_BASE:
            if v & 1 and not self.regs.get(addr, 0) & 1:
                self.stk_zero = self.now()
            self.regs[addr] = v
        elif addr == STK_BASE + 0x08:  # CNTL: set the count
            self.stk_base, self.stk_zero = v, self.now()
        elif addr == STK_BASE + 0x10:
            self.regs[addr] = v
        else:
            self.unknown(addr, "wrote")

    def _power_switch(self) -> None:
        """The display's supply follows its switch's pin: on while it is an output (MODE bits
        set) driven low."""
        if self.power is None or self.display is None:
            return
        port, pin = self.power
        base = next(b for b, name in self.GPIO.items() if name == port)
        mode = self.regs.get(base, 0x44444444) >> (4 * pin) & 3
        low = not self.regs.get(base + 0x0C, 0) >> pin & 1
        self.display.power(bool(mode) and low)

    # ------------------------------------------------------------------ DMA1 channel 6
    def _dma_write(self, addr: int, off: int, v: int) -> None:
        if off == 0x04:  # INTFCR: clear flags
            self.regs[DMA_BASE] = self.regs.get(DMA_BASE, 0) & ~v
            return
        was = self.regs.get(DMA_BASE + 0x6C, 0) & 1
        self.regs[addr] = v
        if off == 0x6C and v & 1 and not was:  # EN
            if (v & (1 << 4 | 1 << 7)) != (1 << 4 | 1 << 7) or v & (1 << 14 | 1 << 5 | 0xF00) \
                    or self.regs.get(DMA_BASE + 0x74) != 0x40005410:
                self.fail("DMA1 channel 6: the model moves bytes from memory (DIR, MINC; 8-bit, "
                          "not circular) to I2C1's DATAR only")
                return
            if not self.i2c.regs[0x04] >> 11 & 1:
                self.fail("DMA1 channel 6 enabled before I2C1's CTLR2.DMAEN")
                return
            self.regs[DMA_BASE] = self.regs.get(DMA_BASE, 0) & ~DMA_TCIF6
            self.i2c.dma_start(self.regs.get(DMA_BASE + 0x78, 0),
                               self.regs.get(DMA_BASE + 0x70, 0) & 0xFFFF)
        elif off == 0x6C and not v & 1 and was and self.i2c.dma_left:
            self.fail("DMA1 channel 6 disabled with bytes left to send")

    def dma_done(self) -> None:
        self.regs[DMA_BASE] = self.regs.get(DMA_BASE, 0) | DMA_TCIF6 | 1 << 20  # TCIF6, GIF6

    # ------------------------------------------------------------------ sleep and events
    def _edges(self, falling: bool) -> list[float]:
        """The button's falling (or rising) edges, in time order."""
        out = []
        for p in self.presses:
            down = [p.at] + [p.at + a + n for a, n in p.bounces]
            up = [p.at + a for a, _ in p.bounces] + [p.at + p.hold]
            out += down if falling else up
        return sorted(out)

    def next_event(self, after: float) -> tuple[float, str] | None:
        """The first event after ``after``: (time, cause), or None where no source is on."""
        found = []
        if self.set_event_at is not None and self.set_event_at > after:
            found.append((self.set_event_at, "event"))
        ev = self.regs.get(EXTI_BASE + 0x04, 0)
        rise, fall = self.regs.get(EXTI_BASE + 0x08, 0), self.regs.get(EXTI_BASE + 0x0C, 0)
        line = self.button_pin
        port = self.regs.get(AFIO_EXTICR, 0) >> (2 * line) & 3
        if self.button_port and ev >> line & 1 and port == EXTI_PORT[self.button_port]:
            for edge_falls, on in ((True, fall), (False, rise)):
                if on >> line & 1:
                    found += [(t, "button") for t in self._edges(edge_falls) if t > after][:1]
        awu = self.regs.get(PWR_BASE + 0x08, 0) & 2 and self.regs.get(RCC_RSTSCKR, 0) & 1
        window = self.regs.get(PWR_BASE + 0x0C, 0x3F) & 0x3F
        if (awu and window and self.awu_start is not None and ev >> EXTI_AWU_LINE & 1
                and (rise | fall) >> EXTI_AWU_LINE & 1):
            period = window * AWU_DIV[self.regs.get(PWR_BASE + 0x10, 0) & 15] * \
                self.m.chip.clock_hz / LSI_HZ
            k = int(max(0.0, after - self.awu_start) // period) + 1
            found.append((self.awu_start + k * period, "awu"))
        return min(found) if found else None

    def wfi(self) -> None:
        """The firmware waits for an event (see the module's docstring)."""
        sctlr = self.regs.get(PFIC_SCTLR, 0)
        if not sctlr & SCTLR_WFITOWFE:
            self.fail("the firmware waits for an interrupt (wfi with PFIC_SCTLR.WFITOWFE clear); "
                      "the model wakes the chip by events only: set WFITOWFE")
            return
        t = self.now()
        nxt = self.next_event(self.event_seen)
        if nxt is not None and nxt[0] <= t:  # pending: the wait ends at once
            self.event_seen = t
            return
        nxt = self.next_event(t)
        if nxt is None or (self.deadline is not None and nxt[0] >= self.deadline):
            if self.deadline is None:
                self.fail("the firmware sleeps with no wake-up source left (an EXTI event line "
                          "on the button, or the auto-wakeup)")
            else:
                self.m.stop()  # the script is over and the firmware sleeps
            return
        standby = bool(sctlr & SCTLR_SLEEPDEEP and self.regs.get(PWR_BASE, 0) & 2)
        if standby and self.usart.busy():
            self.fail("the firmware entered standby while USART1 was still sending (standby "
                      "stops its clock: the text would be cut; wait for STATR.TC first)")
            return
        mode = "standby" if standby else "sleep"
        end = nxt[0] + WAKE_US[mode] * self.m.chip.clock_hz / 1e6
        self.sleeps.append(Sleep(t, end, mode, bool(self.regs.get(RCC_RSTSCKR, 0) & 1), nxt[1]))
        self.event_seen = nxt[0]
        self.m.wait_until(end)
        if standby:  # every clock stopped: SysTick stood still; the chip wakes on the HSI
            self.stk_zero += end - t
            self.regs[0x40021000] = self.regs.get(0x40021000, 0x3) & ~(1 << 24)
            self.regs[0x40021004] = self.regs.get(0x40021004, 0) & ~3
            self.regs[PWR_BASE] = 0

    # ------------------------------------------------------------------ SysTick, ADC
    def _systick(self) -> int:
        if self.deadline is not None and self.now() >= self.deadline:
            self.m.stop()  # the script is over and the firmware waits (it polls the timer)
        ctlr = self.regs.get(STK_BASE, 0)
        if not ctlr & 1:
            return self.stk_base
        rate = 1.0 if ctlr & 4 else 1 / 8  # STCLK: HCLK, else HCLK / 8
        return (self.stk_base + int((self.now() - self.stk_zero) * rate)) & 0xFFFFFFFF

    ADC_CYCLES = 300  # one conversion (sample + 11 ADC clocks at HCLK / 2, with margin)

    def _adc_read(self, addr: int, off: int) -> int:
        if off == 0x00:  # STATR: EOC once the conversion time has passed
            eoc = self.adc_ready_at is not None and self.now() >= self.adc_ready_at
            return (self.regs.get(addr, 0) & ~2) | (2 if eoc else 0)
        if off == 0x4C:  # RDATAR: reading clears EOC
            self.adc_ready_at = None
            return self.adc_value
        return self.regs.get(addr, 0)

    def _adc_write(self, addr: int, off: int, v: int) -> None:
        if off == 0x08:  # CTLR2: calibration ends at once; SWSTART starts a conversion
            if v & (1 << 22):
                if not v & 1:
                    self.fail("the firmware started an ADC conversion with ADC1 off (ADON 0)")
                    return
                self.adc_value = int(self.adc_rng.integers(380, 420))  # a floating pin's noise
                self.adc_ready_at = self.now() + self.ADC_CYCLES
            v &= ~((1 << 22) | (1 << 2) | (1 << 3))
        self.regs[addr] = v


class DataRegister:
    """A transmitter's data register beside its shift register (I2C1's, USART1's): a byte
    written while the wire is idle goes out at once, one written while it is busy waits in the
    register, one written while the register is full is lost (an error)."""

    def _put(self, byte: int, unit: str) -> None:
        if self.queued is not None:
            self.p.fail(f"{unit}: a byte written to DATAR while TxE was clear (lost)")
        elif self.p.now() >= self.ready_at:
            self._shift(byte, self.p.now())
        else:
            self.queued = byte


class I2CMaster(DataRegister):
    """I2C1 as a master transmitter (START, 7-bit address, data, STOP) to the SSD1306.

    Each byte takes 9 SCL periods on the wire (SCL from CKCFGR's CCR and its mode: fast mode
    f = PCLK / 3 CCR, standard mode f = PCLK / 2 CCR), START and STOP one period each. The data
    register holds one byte beside the one being shifted out: TxE is set while it is free, BTF
    once both are empty. A read from a device, another address than the display's, or a byte
    written while TxE is clear stops the run with an error. A status read while nothing can
    change before the wire is done moves the clock there (:meth:`Machine.wait_until`): the
    firmware's polling loop would only spin until then."""

    def __init__(self, p: Peripherals):
        self.p = p
        self.regs = {0x00: 0, 0x04: 0, 0x08: 0, 0x0C: 0, 0x1C: 0}
        self.state = "idle"  # idle, start, address, data
        self.ready_at = 0.0  # when the current START / address / byte is done on the wire
        self.queued: int | None = None  # the byte waiting in the data register
        self.wire_bytes = 0  # bytes sent (address bytes included)
        self.wire_cycles = 0.0  # cycles the bus was busy
        self.addr_cleared = False
        self.dma_left = 0  # bytes DMA channel 6 still feeds to DATAR (CTLR2.DMAEN)
        self.dma_addr = 0  # the memory address of the next
        self.dr_free_at = 0.0  # when DATAR was emptied (DMA loads it then)
        self._watched: set[tuple[int, int]] = set()  # memory ranges a DMA has read

    def period(self) -> float:
        ccr = self.regs[0x1C] & 0xFFF
        if not self.regs[0x00] & 1 or ccr == 0:
            self.p.fail("I2C1 used before it was enabled and clocked (CTLR1.PE, CKCFGR.CCR)")
            return 1.0
        return 3 * ccr if self.regs[0x1C] & (1 << 15) else 2 * ccr

    def _advance(self) -> None:
        """Up to now: the byte in DATAR moves to the wire when the one before it is done, and
        with DMA (CTLR2.DMAEN, channel 6 on) DATAR is loaded from memory as soon as it is
        empty, so the bytes go back to back."""
        t = self.p.now()
        while True:
            if self.queued is not None:
                if t < self.ready_at:
                    return
                start = self.ready_at
                self._shift(self.queued)  # it started when the byte before it was done
                self.queued = None
                self.dr_free_at = start
            elif self.dma_left and self.regs[0x04] >> 11 & 1 and t >= self.dr_free_at:
                self.queued = self.p.m.uc.mem_read(self.dma_addr, 1)[0]
                self.dma_addr += 1
                self.dma_left -= 1
                if not self.dma_left:
                    self.p.dma_done()
                if self.p.now() >= self.ready_at and self.dr_free_at >= self.ready_at:
                    self._shift(self.queued, self.dr_free_at)  # the wire was idle
                    self.queued = None
            else:
                return

    def dma_start(self, addr: int, count: int) -> None:
        """DMA channel 6 enabled to feed ``count`` bytes from ``addr`` to DATAR."""
        if self.state != "data":
            self.p.fail(f"DMA to I2C1 started in the {self.state} phase (after the address)")
            return
        self._advance()
        self.dma_addr, self.dma_left = addr, count
        self.dr_free_at = max(self.p.now(), self.ready_at if self.queued is not None else 0.0)
        # a write to the bytes still to be sent first sends those whose time has come (one hook
        # per buffer, kept: adding and removing hooks flushes Unicorn's translations)
        if (addr, count) not in self._watched:
            self._watched.add((addr, count))
            self.p.m.watch_writes(addr, count, lambda: self.dma_left and self._advance())
        self._advance()

    def dma_wait(self) -> None:
        """A poll of the DMA's flags: the clock moves to the next byte the DMA loads (the
        firmware can only wait)."""
        while self.dma_left and self.regs[0x04] >> 11 & 1:  # (DMAEN cleared: no byte comes)
            nxt = self.ready_at if self.queued is not None else self.dr_free_at
            self.p.m.wait_until(nxt)
            self._advance()

    def _shift(self, byte: int, start: float | None = None) -> None:
        start = self.ready_at if start is None else start
        self.dr_free_at = start
        self.ready_at = start + 9 * self.period()
        self.wire_cycles += 9 * self.period()
        self.wire_bytes += 1
        self.p.display.write(byte)

    def read(self, off: int) -> int:
        self._advance()
        t = self.p.now()
        if off == 0x14:  # STAR1
            # a driver polls it until the flag it waits for comes: where none can come before
            # the wire is done, the clock jumps there
            waiting = t < self.ready_at and (self.state in ("start", "address") or
                                             (self.state == "data" and self.queued is not None))
            if waiting:
                self.p.m.wait_until(self.ready_at)
                self._advance()
                t = self.p.now()
            v = 0
            if self.state == "start" and t >= self.ready_at:
                v |= 1  # SB
            if self.state == "address" and t >= self.ready_at and not self.addr_cleared:
                v |= 2  # ADDR
            if self.state == "data":
                if self.queued is None:
                    v |= 1 << 7  # TxE
                    if t >= self.ready_at:
                        v |= 1 << 2  # BTF
            return v
        if off == 0x18:  # STAR2: reading it after STAR1 clears ADDR
            if self.state == "address" and t >= self.ready_at:
                self.addr_cleared = True
                self.state = "data"
            busy = self.state != "idle" or t < self.ready_at
            return (2 if busy else 0) | (1 if self.state != "idle" else 0) | (
                4 if self.state == "data" else 0)
        if off == 0x10:
            return 0
        if off in self.regs:
            return self.regs[off]
        return self.p.unknown(0x40005400 + off, "read")

    def write(self, off: int, v: int) -> None:
        self._advance()
        if off == 0x00:  # CTLR1
            if not v & 1 and (self.state != "idle" or self.p.now() < self.ready_at):
                self.p.fail("I2C1 disabled (CTLR1.PE cleared) during a transfer")
                return
            if v & (1 << 8):  # START
                if self.state not in ("idle", "data"):
                    self.p.fail(f"I2C1: START during the {self.state} phase")
                    return
                if self.state == "data":
                    self.p.display.end()
                start = max(self.p.now(), self.ready_at)
                self.ready_at = start + self.period()
                self.wire_cycles += self.period()
                self.state = "start"
            if v & (1 << 9):  # STOP, after what is still on the wire
                if self.state == "data":
                    if self.queued is not None:
                        self._shift(self.queued)
                        self.queued = None
                    self.p.display.end()
                self.ready_at = max(self.p.now(), self.ready_at) + self.period()
                self.wire_cycles += self.period()
                self.state = "idle"
            self.regs[0x00] = v & ~((1 << 8) | (1 << 9))
        elif off == 0x10:  # DATAR
            if self.state == "start":
                if self.p.now() < self.ready_at:
                    self.p.fail("I2C1: address written before SB was set")
                    return
                if v & 1:
                    self.p.fail(f"I2C1: read from 0x{v >> 1:02x}; the display is written only")
                    return
                if self.p.display is None:
                    self.p.fail(f"I2C1: no device at address 0x{v >> 1:02x} (none is connected)")
                    return
                if v >> 1 != self.p.display.address:
                    self.p.fail(f"I2C1: no device at address 0x{v >> 1:02x} (the SSD1306 "
                                f"answers at 0x{self.p.display.address:02x})")
                    return
                self._shift_address()
                self.state, self.addr_cleared = "address", False
                self.p.display.begin()
            elif self.state == "data":
                self._put(v & 0xFF, "I2C1")
            else:
                self.p.fail(f"I2C1: a byte written to DATAR in the {self.state} phase (the "
                            "address is cleared by reading STAR1 then STAR2)")
        elif off in self.regs:
            self.regs[off] = v
        else:
            self.p.unknown(0x40005400 + off, "wrote")

    def _shift_address(self) -> None:
        start = max(self.p.now(), self.ready_at)
        self.ready_at = start + 9 * self.period()
        self.wire_cycles += 9 * self.period()
        self.wire_bytes += 1


class Usart(DataRegister):
    """USART1 as a transmitter: each byte is 10 bit times on the wire (start, 8 data, stop; a
    bit is BRR core clocks, f = HCLK / BRR), the data register beside the shift register: TXE
    while it is free, TC once both are empty. A status read while the firmware can only wait
    moves the clock to where the flag comes (as I2C1's). The bytes sent are captured in ``out``;
    a byte sent while the transmitter is off, or TX not routed to an output pin (PD5, the
    default mapping, as an alternate-function output), stops the run with an error."""

    def __init__(self, p: Peripherals):
        self.p = p
        self.regs = {0x08: 0, 0x0C: 0, 0x10: 0, 0x14: 0, 0x18: 0}
        self.ready_at = 0.0  # when the byte being shifted out is done
        self.queued: int | None = None
        self.out = bytearray()
        self._polled = False  # the last access was a status read

    @property
    def text(self) -> str:
        return self.out.decode("latin-1")

    def baud(self) -> float | None:
        brr = self.regs[0x08] & 0xFFFF
        return self.p.m.chip.clock_hz / brr if brr else None

    def _advance(self) -> None:
        if self.queued is not None and self.p.now() >= self.ready_at:
            self._shift(self.queued, self.ready_at)
            self.queued = None

    def _shift(self, byte: int, start: float) -> None:
        self.ready_at = start + 10 * (self.regs[0x08] & 0xFFFF)
        self.out.append(byte)

    def busy(self) -> bool:
        """Whether a byte is still being sent (or waits to be)."""
        self._advance()
        return self.queued is not None or self.p.now() < self.ready_at

    def flush(self) -> None:
        """The bytes still to be sent, sent (the end of a run)."""
        if self.queued is not None:
            self._shift(self.queued, self.ready_at)
            self.queued = None

    def read(self, off: int) -> int:
        self._advance()
        if off == 0x00:  # STATR
            # TXE can only come when the wire is done; a second read in a row with only TC to
            # come waits for TC
            if self.queued is not None or (self._polled and self.p.now() < self.ready_at):
                self.p.m.wait_until(self.ready_at)
                self._advance()
            self._polled = True
            done = self.queued is None and self.p.now() >= self.ready_at
            return (1 << 7 if self.queued is None else 0) | (1 << 6 if done else 0)
        if off == 0x04:
            return 0  # nothing received: RX is not modelled
        if off in self.regs:
            return self.regs[off]
        return self.p.unknown(USART1_BASE + off, "read")

    def write(self, off: int, v: int) -> None:
        self._advance()
        self._polled = False
        if off == 0x04:  # DATAR
            ctlr1 = self.regs[0x0C]
            if not (ctlr1 >> 13 & 1 and ctlr1 >> 3 & 1 and self.regs[0x08] & 0xFFFF):
                self.p.fail("USART1: a byte written with the transmitter off (CTLR1.UE, TE, "
                            "and BRR set first)")
                return
            pd5 = self.p.regs.get(0x40011400, 0x44444444) >> 20 & 15
            remap = self.p.regs.get(0x40010004, 0) & (1 << 2 | 1 << 21)
            if remap or not (pd5 & 3 and pd5 & 8):
                self.p.fail("USART1: TX does not reach a pin (PD5 must be an alternate-function "
                            "output, AFIO_PCFR1's USART1 remap 0)")
                return
            self._put(v & 0xFF, "USART1")
        elif off in self.regs:
            self.regs[off] = v
        else:
            self.p.unknown(USART1_BASE + off, "wrote")
