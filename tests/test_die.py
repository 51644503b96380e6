"""The electronic die: its firmware in the emulator with the peripheral and display models,
frames equal to the reference's, debouncing, the test pattern, fair rolls, and the errors of the
display and I2C models."""

import itertools

import numpy as np
import pytest

from bitmcu.apps.die.emulate import check_frames, expected_frame, roll_die, uniformity_p
from bitmcu.apps.die.firmware import DieOptions, build_die
from bitmcu.apps.die.ssd1306 import SSD1306, DisplayError
from bitmcu.cli import main
from bitmcu.core.errors import BitmcuError
from bitmcu.target.peripherals import Peripherals
from bitmcu.train.config import load_config

from .conftest import FakeMachine

# the smallest dice decoder the die takes: 32x32 from an 8x8 map, cheap to emulate
TINY_DIE = ["data.dataset=dice", "data.size=32", "data.dice.train=300", "data.dice.test=60",
            "model.family=decoder", "model.latent=2", "model.hidden=[8]", "model.channels=1",
            "model.start=8", "model.conv=[up*1, up*1]", "train.epochs=1", "train.batch_size=32",
            "train.threads=1", "augment.enabled=false"]


@pytest.fixture(scope="module")
def die_dir(tmp_path_factory):
    from bitmcu.train import train

    base = tmp_path_factory.mktemp("die")
    run = train(load_config(None, TINY_DIE), run_dir=base / "run", quiet=True)
    build_die(run, out=base / "die")
    return base / "die"


def checkerboard() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:128]
    return (((x >> 3) ^ (y >> 3)) & 1).astype(bool)


def test_scripted_presses_draw_the_reference_frames(die_dir):
    run = roll_die(die_dir, presses=[(150, 40), (300, 40), (450, 60)])
    assert [r.index for r in run.rolls] == [0, 1, 2, 3]  # the start-up roll, then one per press
    assert run.rolls[0].press_cycle is None and all(r.press_cycle for r in run.rolls[1:])
    assert check_frames(run) == []  # every pixel as the numpy reference + scaling + dithering
    assert all(1 <= r.face <= 6 for r in run.rolls)
    assert len({r.state for r in run.rolls}) == 4
    assert all(r.i2c_bytes > 512 for r in run.rolls)  # 8 pages of 64 columns, and commands
    assert run.scl_hz == pytest.approx(400e3, rel=0.01)
    # the chip sleeps between presses: each press wakes it from standby (200 us, the
    # datasheet's), and the roll starts at once (the press is checked 20 ms after its edge,
    # before the first page is drawn)
    for r in run.rolls[1:]:
        assert r.wake_cycles == 200 * 48
        assert (r.start_cycle - r.press_cycle - r.wake_cycles) / 48e3 < 1
        assert (r.end_cycle - r.press_cycle) / 48e3 > 20  # nothing before the check
    assert run.ram["total"] <= 2048 and run.flash["total"] <= 16384 and run.dropped == 0
    # the report splits a press's time: wake-up, debounce, generation and display transfer
    s = run.summary()
    assert s["median_debounce_ms"] < 1 and s["median_wake_ms"] == pytest.approx(0.2)
    for r in run.rolls[1:]:
        parts = (r.start_cycle - r.press_cycle) + r.generation_cycles + r.display_cycles
        assert parts == r.end_cycle - r.press_cycle and r.display_cycles > 0
    assert (f"wake-up from standby 0.2 ms, debounce {s['median_debounce_ms']:.1f} ms, "
            "generation") in run.text()
    # each roll is printed on USART1 (face, cycles, status), as the emulator saw it
    assert run.uart_errors() == []
    assert [ln.split(",")[0] for ln in run.uart.splitlines()] == [
        f"roll {r.index}: face {r.face}" for r in run.rolls]
    assert "they agree with the rolls" in run.text()


def test_expected_frame_follows_the_state_and_the_dither(die_dir):
    from bitmcu.deploy.export import read_export

    model = read_export(die_dir / "export")
    face, ordered = expected_frame(model, 0x12345678, "ordered")
    face2, thresh = expected_frame(model, 0x12345678, "threshold")
    assert face == face2 and 1 <= face <= 6
    assert not ordered[:, :32].any() and not ordered[:, 96:].any()  # only the middle 64 columns
    # thresholding draws 2x2 blocks of one value; ordered dithering need not
    blocks = thresh[:, 32:96].reshape(32, 2, 32, 2)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_contrast_dithering_is_ordered_dithering_after_the_levels_curve():
    """The default display: the 4x4 Bayer thresholds 16 b + 8 applied to 1.25 (v - 30) clipped
    to 0..255, for every pixel value and place, folded into one threshold table; faint grey
    (up to 36) is never lit, anything over 228 always."""
    from bitmcu.apps.die.display import BAYER, DEFAULT_DITHER, display_bits, thresholds

    assert DieOptions().dither == DEFAULT_DITHER == "contrast"
    v = np.arange(256)[:, None, None]
    curved = np.clip(1.25 * (v - 30), 0, 255) > BAYER * 16 + 8
    np.testing.assert_array_equal(v > thresholds("contrast"), curved)
    np.testing.assert_array_equal(v > thresholds("ordered"), v > BAYER * 16 + 8)
    ramp = np.arange(0, 256, 8, dtype=np.uint8)[None, :].repeat(32, 0)  # 32x32, columns 0..248
    bits = display_bits(ramp, "contrast")
    assert not bits[:, :10].any() and bits[:, 60:].all()  # pixels 0..32 dark, 240, 248 lit
    plain = display_bits(ramp, "ordered")  # the curve darkens faint grey, brightens the rest
    assert bits[:, :24].sum() < plain[:, :24].sum() and bits[:, 40:].sum() > plain[:, 40:].sum()


def test_short_press_and_bounces_are_no_press(die_dir):
    # two presses shorter than the 20 ms debounce, then one held 60 ms
    run = roll_die(die_dir, presses=[(150, 8), (250, 12), (400, 60)])
    assert run.dropped == 2  # their rolls began at the edge and drew nothing
    assert len(run.rolls) == 2 and check_frames(run) == []  # the start-up roll and the 60 ms


def test_button_held_at_power_up_shows_the_test_pattern(die_dir):
    run = roll_die(die_dir, presses=[(0, 120)])
    assert len(run.patterns) == 1
    np.testing.assert_array_equal(run.patterns[0], checkerboard())
    assert len(run.rolls) == 1 and check_frames(run) == []  # then it rolls


def test_rolls_are_fair_and_differ(die_dir):
    run = roll_die(die_dir, rolls=30, gap_ms=6, hold_ms=21)  # after the roll's 3.5 ms on USART1
    faces = [r.face for r in run.rolls]
    assert uniformity_p(faces) > 0.01
    assert len({r.frame.tobytes() for r in run.rolls}) > 25
    assert check_frames(run) == []


def test_uniformity_p():
    assert uniformity_p([1, 2, 3, 4, 5, 6] * 10) == pytest.approx(1.0)
    assert uniformity_p([1] * 60) < 1e-10
    # chi-square 5.0 with 5 degrees of freedom: p = 0.4159 (tables)
    assert uniformity_p([1] * 15 + [2] * 5 + [3] * 10 + [4] * 10 + [5] * 10 + [6] * 10) == \
        pytest.approx(0.4159, abs=1e-3)


def test_cli_die_and_bad_options(die_dir, tmp_path, capsys):
    run = die_dir.parent / "run"
    assert main(["die", str(run), "--out", str(tmp_path / "d"), "--emulate", "2"]) == 0
    out = capsys.readouterr().out
    assert "every frame equals the numpy reference's picture (2 rolls)" in out
    assert "strict (every judge reads the face drawn)" in out
    import json

    judged = json.loads((tmp_path / "d" / "rolls" / "rolls.json").read_text())["judges"]
    assert "pips" in judged["judges"] and 0 <= judged["strict"] <= min(judged["judges"].values())
    energy = json.loads((tmp_path / "d" / "rolls" / "rolls.json").read_text())["energy"]
    assert energy["rolls_per_day"] == 20 and energy["battery_mah"] == 220
    # the display's supply switched off at idle (PC4, the default): the chip's standby and the
    # switch's leakage
    assert energy["idle_uA"] == pytest.approx(9.76) and energy["battery_days"] > 180
    assert "battery: 220 mAh lasts" in out
    for f in ("die.elf", "die.bin", "die.hex", "die.map", "die.json", "rolls/contact_sheet.png",
              "rolls/rolls.gif", "rolls/roll-0001.png", "rolls/rolls.json", "rolls/energy.png"):
        assert (tmp_path / "d" / f).is_file(), f
    with pytest.raises(BitmcuError, match="--button 'PC1' is not allowed"):
        build_die(run, out=tmp_path / "x", options=DieOptions(button="PC1"))
    with pytest.raises(BitmcuError, match="--dither 'floyd' is not allowed"):
        build_die(run, out=tmp_path / "x", options=DieOptions(dither="floyd"))
    with pytest.raises(BitmcuError, match="--display-power 'PC2' is not allowed"):
        build_die(run, out=tmp_path / "x", options=DieOptions(display_power="PC2"))
    with pytest.raises(BitmcuError, match="--display-power PC4: the button uses it.*none"):
        build_die(run, out=tmp_path / "x", options=DieOptions(button="PC4"))
    assert not (tmp_path / "x").exists()  # nothing written
    for argv, words in ((["--oracle", str(run)], "--oracle judges the emulated frames: give "
                                                  "--emulate N"),
                        (["--debounce-ms", "0"], "--debounce-ms 0: must be 1..500"),
                        (["--debounce-ms", "501"], "--debounce-ms 501: must be 1..500"),
                        (["--display-timeout", "0.2"], "--display-timeout 0.2: must be 0 (the "
                                                       "display stays on) or 0.48..3600"),
                        (["--rolls-per-day", "0"], "--rolls-per-day 0: must be > 0"),
                        (["--battery-mah", "-5"], "--battery-mah -5: must be > 0"),
                        (["--press-gap", "0"], "--press-gap 0: must be > 0"),
                        (["--display-power", "PD5"], "--display-power 'PD5' is not allowed"),
                        (["--seed", "-1"], "--seed -1: give a whole number 0..")):
        assert main(["die", str(run), "--out", str(tmp_path / "y"), *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not (tmp_path / "y").exists()


def test_cli_press_gap_past_the_timeout_rolls_from_a_dark_display(die_dir, tmp_path, capsys):
    """--press-gap longer than the display's timeout: the second roll finds the display's
    supply switched off, sets it up from reset (its frame still the reference's) and the
    battery projection takes that roll's figures."""
    import json

    run = die_dir.parent / "run"
    assert main(["die", str(run), "--out", str(tmp_path / "d"), "--emulate", "2",
                 "--press-gap", "11"]) == 0
    out = capsys.readouterr().out
    assert "every frame equals the numpy reference's picture (2 rolls)" in out
    assert "the median of 1 roll of a dark display" in out
    report = json.loads((tmp_path / "d" / "rolls" / "rolls.json").read_text())
    assert [r["display_woke"] for r in report["rolls"]] == [False, True]
    assert report["energy"]["roll_basis"] == "1 roll of a dark display"


def test_threshold_dithering_in_the_firmware_draws_the_reference(tmp_path):
    """The firmware's own threshold comparison (not only its Python twin) draws each frame: the
    shipped die's pictures hold pixels just under and just over the threshold (124..127 and
    128..131), so a comparison off by a few levels would draw another frame."""
    from bitmcu.core.rng import xorshift32
    from bitmcu.deploy import reference
    from bitmcu.deploy.export import read_export

    from .conftest import ROOT

    build_die(ROOT / "models" / "die-ch32v003", out=tmp_path / "t",
              options=DieOptions(dither="threshold"))
    rolled = roll_die(tmp_path / "t", rolls=3)
    assert rolled.firmware.options["dither"] == "threshold"
    assert check_frames(rolled) == []
    model = read_export(tmp_path / "t" / "export")
    pixels = []
    for r in rolled.rolls:  # the pictures the frames were drawn from (as expected_frame draws)
        s = np.array([r.state], dtype=np.uint32)
        while int((s := xorshift32(s))[0]) >> 29 >= 6:
            pass
        z, _ = model.input.draw(s, np.array([int(s[0]) >> 29]))
        pixels.append(reference.generate(model, z, np.array([int(s[0]) >> 29]))[0])
    pixels = np.concatenate(pixels)
    assert ((pixels >= 124) & (pixels <= 127)).any() and ((pixels >= 128) & (pixels <= 131)).any()


# ------------------------------------------------------------------ the display and I2C models

def test_ssd1306_decodes_the_addressing_modes():
    d = SSD1306()
    d.begin()
    for b in (0x00, 0xAF, 0xA1, 0xC8, 0x20, 0x00, 0x21, 10, 11, 0x22, 2, 3):
        d.write(b)
    d.end()
    d.begin()
    for b in (0x40, 0xFF, 0x01, 0x80, 0x03):  # horizontal: (2,10) (2,11) then (3,10) (3,11)
        d.write(b)
    d.end()
    assert list(d.ram[2, 10:12]) == [0xFF, 0x01] and list(d.ram[3, 10:12]) == [0x80, 0x03]
    d.begin()
    for b in (0x80, 0x20, 0x80, 0x02, 0x80, 0xB5, 0x80, 0x07, 0x80, 0x11, 0xC0, 0x5A):
        d.write(b)  # Co = 1: a control byte before each; page mode, page 5, column 0x17
    d.end()
    assert d.ram[5, 0x17] == 0x5A
    pix = d.pixels()
    assert pix[16:24, 10].all() and pix[3 * 8 + 7, 10] and not pix[3 * 8 + 6, 10]


def test_ssd1306_vertical_mode_and_the_page_mode_column_wrap():
    d = SSD1306()
    d.begin()
    for b in (0x00, 0x20, 0x01, 0x21, 10, 11, 0x22, 2, 3):  # vertical, columns 10-11, pages 2-3
        d.write(b)
    d.end()
    d.begin()
    for b in (0x40, 1, 2, 3, 4, 5):  # down the pages, then the next column, then from the start
        d.write(b)
    d.end()
    assert [d.ram[2, 10], d.ram[3, 10], d.ram[2, 11], d.ram[3, 11]] == [5, 2, 3, 4]
    d.begin()
    for b in (0x00, 0x20, 0x02, 0xB6, 0x0E, 0x17):  # page mode, page 6, column 0x7E
        d.write(b)
    d.end()
    before = d.ram.copy()  # the power-up memory: noise
    d.begin()
    for b in (0x40, 0xA1, 0xA2, 0xA3):  # columns 126, 127, then 0 of the same page
        d.write(b)
    d.end()
    assert [d.ram[6, 126], d.ram[6, 127], d.ram[6, 0]] == [0xA1, 0xA2, 0xA3]
    changed = np.argwhere(d.ram != before)
    assert {tuple(int(v) for v in rc) for rc in changed} <= {(6, 126), (6, 127), (6, 0)}


@pytest.mark.parametrize("stream, msg", [
    ([0x00, 0xFE], "command 0xfe is not supported"),
    ([0x12], "control byte 0x12"),
    ([0x00, 0x20, 0x03], "addressing mode 3 is invalid"),
])
def test_ssd1306_reports_what_it_does_not_support(stream, msg):
    d = SSD1306()
    d.begin()
    with pytest.raises(DisplayError, match=msg):
        for b in stream:
            d.write(b)


def test_ssd1306_unfinished_command():
    d = SSD1306()
    d.begin()
    for b in (0x00, 0x21, 5):
        d.write(b)
    with pytest.raises(DisplayError, match="0x21 ended after 1 of its 2 argument bytes"):
        d.end()


def test_ssd1306_supply_switch_follows_the_datasheet():
    """A switched supply: commands only POWER_UP_MS after it goes on, the controller from reset
    (memory undefined); off only after AEh, 8Dh 10h and tOFF (100 ms); each misstep is named.
    Through the peripherals, the pin switches it: an output driven low is on."""
    t = [0.0]
    d = SSD1306()
    d.clock, d.hz = (lambda: t[0]), 1e3  # clock in ms
    d.power(False)
    with pytest.raises(DisplayError, match="while its supply is switched off"):
        d.begin()
    t[0] = 100.0
    d.power(True)
    t[0] = 105.0
    with pytest.raises(DisplayError, match="addressed 5.00 ms after its supply was switched on"):
        d.begin()
    t[0] = 110.0
    d.begin()
    for b in (0x00, 0x8D, 0x14, 0xAF):
        d.write(b)
    d.end()
    with pytest.raises(DisplayError, match="while the display or its charge pump was on"):
        d.power(False)
    d.begin()
    for b in (0x00, 0xAE, 0x8D, 0x10):
        d.write(b)
    d.end()
    t[0] = 150.0
    with pytest.raises(DisplayError, match="40.0 ms after the charge pump; .* tOFF = 100 ms"):
        d.power(False)
    t[0] = 210.0
    d.power(False)
    before = d.ram.copy()
    d.power(True)  # from reset: a new undefined memory, page addressing, display off
    assert not d.on and not d.pump and d.mode == 2 and (d.ram != before).any()
    assert [k for k, _ in itertools.groupby(row[4] for row in d.history)] == [False, True,
                                                                            False, True]
    m = FakeMachine()
    p = Peripherals(m, SSD1306(), ("C", 3), power=("C", 4))
    assert not p.display.powered  # the gate's pull-up: off at reset (PC4 an input)
    p.write(0x40011000, 4, 0x44414444)  # PC4 an output, OUTDR 0: low, on
    assert p.display.powered
    p.write(0x40011010, 4, 1 << 4)  # BSHR: PC4 high, off
    assert not p.display.powered and m.error is None


def i2c_ready():
    m = FakeMachine()
    p = Peripherals(m, SSD1306(), ("C", 3))
    p.write(0x40005400 + 0x1C, 4, (1 << 15) | 40)  # fast mode, CCR 40: 400 kHz at 48 MHz
    p.write(0x40005400, 4, 1)  # PE
    return m, p


def test_i2c_model_times_the_bytes_and_flags():
    m, p = i2c_ready()
    star1 = lambda: p.read(0x40005414, 4)  # noqa: E731
    p.write(0x40005400, 4, 1 | 1 << 8)  # START
    assert star1() & 1 and m.t == 120  # SB after one SCL period: the poll waited that long
    p.write(0x40005410, 4, 0x3C << 1)
    assert star1() & 2 and m.t == 120 + 9 * 120  # ADDR after the address byte
    p.read(0x40005418, 4)
    p.write(0x40005410, 4, 0x00)  # control byte: shifting
    assert star1() & 0x80 and not star1() & 4  # TxE (the data register is free), no BTF yet
    p.write(0x40005410, 4, 0xAF)  # queued behind it
    t0 = m.t
    assert star1() & 0x80 and m.t == t0 + 9 * 120  # TxE once the first byte is out
    m.t += 9 * 120
    assert star1() & 4  # both out: BTF
    p.write(0x40005400, 4, 1 | 1 << 9)  # STOP
    assert m.error is None and p.display.on and p.i2c.wire_bytes == 3
    assert p.i2c.wire_cycles == 120 * (1 + 3 * 9 + 1)


@pytest.mark.parametrize("steps, msg", [
    ([(0x10, 0x78)], "DATAR in the idle phase"),
    ([(0x00, 1 | 1 << 8), ("wait",), (0x10, 0x3D << 1)], "no device at address 0x3d"),
    ([(0x00, 1 | 1 << 8), ("wait",), (0x10, 0x79)], "read from 0x3c"),
    ([(0x00, 1 | 1 << 8), (0x10, 0x78)], "address written before SB"),
])
def test_i2c_model_refuses_unsupported_sequences(steps, msg):
    m, p = i2c_ready()
    for s in steps:
        if s[0] == "wait":
            m.t += 1000
        else:
            p.write(0x40005400 + s[0], 4, s[1])
    assert m.error is not None and msg in m.error


def test_unmodelled_register_is_named():
    m, p = i2c_ready()
    p.read(0x40013000, 4)  # SPI1
    assert "0x40013000, a peripheral register no model covers" in m.error


def test_shipped_die_model_keeps_its_figures(tmp_path):
    """models/die-ch32v003: the die firmware's sizes, rolls and cycles its figures.json records
    (and its README quotes; the emulator is deterministic), and frames equal to the reference's.
    tests/test_shipped.py checks its plain firmware."""
    import json
    from pathlib import Path

    from bitmcu.apps.pipeline import export

    model = Path(__file__).resolve().parents[1] / "models" / "die-ch32v003"
    fig = json.loads((model / "figures.json").read_text())["die"]
    assert f"{fig['flash']:,}" in (model / "README.md").read_text()
    export(model, tmp_path / "exp", target="ch32v003", evaluate=False)
    info = build_die(tmp_path / "exp", out=tmp_path / "die")
    assert (info.latent_scale, info.hot_loops) == (fig["latent_scale"], fig["kernels"])
    assert info.hot_loops_note == fig["kernels_note"]  # why auto placement chose flash
    assert (info.flash["total"], info.ram["total"]) == (fig["flash"], fig["ram"])
    assert (info.ram["data"], info.ram["bss"], info.ram["stack_bound"]) == \
        (fig["data"], fig["bss"], fig["stack_bound"])
    run = roll_die(tmp_path / "die", rolls=len(fig["faces"]))
    assert check_frames(run) == []
    assert [r.face for r in run.rolls] == fig["faces"]
    assert [r.generation_cycles for r in run.rolls] == fig["generation_cycles"]
    assert [r.display_cycles for r in run.rolls] == fig["display_cycles"]


def test_die_keeps_128_bytes_of_ram_free_when_it_places_kernels(die_dir, tmp_path, monkeypatch):
    """Auto placement puts the die's kernels in SRAM only where 128 bytes of RAM stay free by
    the static stack bound (the issue's headroom): with RAM that the SRAM kernels would leave
    100 bytes of, they run from flash, and the die says why; 128 left: SRAM."""
    from bitmcu.apps.die import firmware as die_fw
    from bitmcu.target import firmware as fw

    run = die_dir.parent / "run"
    sram = build_die(run, out=tmp_path / "sram")
    free = sram.ram["size"] - sram.ram["total"]
    assert sram.hot_loops == "sram" and free >= 128
    real = fw._ram_use
    for left, place in ((128, "sram"), (100, "flash")):
        extra = free - left  # bss that leaves `left` bytes free with the kernels in SRAM
        monkeypatch.setattr(fw, "_ram_use", lambda elf, e=extra: (real(elf)[0], real(elf)[1] + e))
        info = build_die(run, out=tmp_path / str(left))
        assert info.hot_loops == place
        assert info.ram["size"] - info.ram["total"] >= die_fw.RAM_FREE
    assert info.hot_loops_note == ("in SRAM they would leave 100 bytes free, fewer than the 128 "
                                   "kept free")


def test_bad_press_scripts(die_dir):
    with pytest.raises(BitmcuError, match="they overlap"):
        roll_die(die_dir, presses=[(100, 50), (120, 40)])
    with pytest.raises(BitmcuError, match="length > 0"):
        roll_die(die_dir, presses=[(100, 0)])
    with pytest.raises(BitmcuError, match="not both"):
        roll_die(die_dir, rolls=2, presses=[(100, 30)])


def test_sleep_between_presses_and_the_display_timeout(die_dir):
    """Presses with long pauses: the chip is in standby through each pause (woken by the
    button, and by the auto-wakeup that counts the display's 10 s); the display goes off 10.08 s
    after the release and on again for the next roll; every frame as the reference's."""
    run = roll_die(die_dir, presses=[(300, 60), (14_000, 60), (15_000, 60)])
    assert check_frames(run) == [] and len(run.rolls) == 4
    ms = 48e3
    standby = [s for s in run.sleeps if s.mode == "standby"]
    assert standby == run.sleeps and len(standby) >= 4
    # each pause between presses is spent asleep, up to the wake-ups
    for r, q in itertools.pairwise(run.rolls[1:]):
        asleep = sum(min(s.end, q.press_cycle) - max(s.start, r.end_cycle) for s in run.sleeps
                     if s.end > r.end_cycle and s.start < q.press_cycle)
        gap = q.press_cycle - r.end_cycle
        assert asleep > gap - 150 * ms  # awake only for the release's debounce
    # the display: off 10.08 s after the first press's release, on again for the second
    off = [t for t, on, *_ in run.display_history if not on and t > 400 * ms]
    assert len(off) >= 1 and 10_000 * ms < off[0] < 10_900 * ms
    causes = [s.cause for s in run.sleeps]  # the display's timeout, then tOFF to its supply cut
    assert causes.count("awu") == 2 and causes.count("button") == 3
    # its supply (PC4's switch): off 0.48 s after the display and its charge pump (the
    # datasheet's tOFF is 100 ms), on again at the second press's edge; the display then set up
    # from reset, its random memory beside the picture cleared (the frames above are equal)
    cut = [t for t, *_, powered in run.display_history if not powered and t > 400 * ms]
    back = [t for t, *_, powered in run.display_history if powered and t > 400 * ms and
            cut and t > cut[0]]
    assert len(cut) == 1 and cut[0] - off[0] == pytest.approx(0.48 * 48e6, rel=1e-3)
    assert back[0] == pytest.approx(run.rolls[2].press_cycle, abs=2 * ms)
    assert [r.display_woke for r in run.rolls] == [False, False, True, False]
    woke = run.rolls[2]
    assert woke.visible_cycle >= woke.end_cycle  # the panel lights 100 ms after AFh
    # SysTick stands still in standby: the press times it reads stay small
    s = run.summary()
    assert s["display_woke"] == 1 and s["sleeps"] == len(run.sleeps)
    assert "the panel lights 100 ms after it is turned on" in run.text()


def test_energy_of_a_scripted_session_is_pinned(die_dir):
    """The energy model over a short scripted session: the charge of each part by the
    datasheets' currents (pinned), and the battery life projection's arithmetic."""
    from bitmcu.apps.die.energy import CURRENTS, display_amps, project

    run = roll_die(die_dir, presses=[(300, 60), (14_000, 60)])
    b = run.budget_dict()
    # the run ends asleep after the second press's roll and release: 14.08 s, of which
    # 13.839 s in standby (10.78 s with the LSI counting the display's timeout and then the
    # 0.48 s to its supply cut, 3.06 s without)
    assert b["seconds"] == pytest.approx(14.080, abs=0.005)
    assert b["standby_s"] == pytest.approx(13.839, abs=0.005)
    uc = b["uC"]
    assert uc["mcu_standby"] == pytest.approx(137.40, rel=2e-3)  # 10.26 uA x 10.78 + 8.76 x 3.06
    assert uc["mcu_wake"] == pytest.approx(5.256, rel=1e-6)  # 4 wake-ups x 200 us x 6.57 mA
    # 20 uA x 0.54 s asleep (0.48 s to the cut, 35 ms at start-up, 20 ms before the set-up
    # after the press) + 1 uA x 3.06 s switched off
    assert uc["display_off"] == pytest.approx(13.78, rel=2e-3)
    # without the switch (the display always powered: it sleeps)
    unswitched = die_dir.parent / "die-unswitched"
    build_die(die_dir.parent / "run", out=unswitched, options=DieOptions(display_power=None))
    run = roll_die(unswitched, presses=[(300, 60), (14_000, 60)])
    b = run.budget_dict()
    # 13.848 s in standby: 10.31 s with the LSI counting the display's timeout, 3.54 s without
    assert b["seconds"] == pytest.approx(14.080, abs=0.005)
    assert b["standby_s"] == pytest.approx(13.848, abs=0.005)
    uc = b["uC"]
    assert uc["mcu_standby"] == pytest.approx(136.77, rel=2e-3)  # 10.26 uA x 10.31 + 8.76 x 3.54
    assert uc["mcu_wake"] == pytest.approx(3.942, rel=1e-6)  # 3 wake-ups x 200 us x 6.57 mA
    assert uc["display_off"] == pytest.approx(71.69, rel=2e-3)  # 20 uA x 3.58 s
    assert uc["mcu_run"] == pytest.approx(6.57e3 * b["awake_s"])
    # the display on: its history's lit pixels through display_amps
    h = run.display_history + [(run.end_cycle, None, None, None, None)]
    on = sum(display_amps(True, p, n) * (t1 - t0) / 48e6 for (t0, o, p, n, _), (t1, *_)
             in itertools.pairwise(h) if o)
    assert uc["display_on"] == pytest.approx(on * 1e6)
    assert b["total_uC"] == pytest.approx(sum(uc.values()))
    # the display's current: sleep, or IDD + twice (ICC + the lit pixels' segment current)
    assert display_amps(False, False, 0) == 20e-6
    assert display_amps(True, True, 64) == pytest.approx(50e-6 + 2 * (430e-6 + 100e-6 * 0xCF / 256))
    p = project(1e-3, 0.1, 64, 10.0, 1, rolls_per_day=20, battery_mah=220)
    idle = CURRENTS["mcu_standby"].amps + CURRENTS["oled_sleep"].amps
    shown = (display_amps(True, True, 64) + 10.26e-6) * 10 + 6.57e-3 * 200e-6
    day = 20 * 1e-3 + 20 * shown + idle * (86_400 - 20 * 10.1)
    assert p.day_coulombs == pytest.approx(day)
    assert p.days == pytest.approx(220 * 3.6 / day)
    assert p.idle_amps == pytest.approx(28.76e-6)
    # with the switch: the display sleeps 0.48 s more (LSI on, one more wake-up), then draws
    # only the switch's leakage
    q = project(1e-3, 0.1, 64, 10.0, 1, rolls_per_day=20, battery_mah=220, switch_after_s=0.48)
    shown_q = shown + (20e-6 + 10.26e-6) * 0.48 + 6.57e-3 * 200e-6
    idle_q = CURRENTS["mcu_standby"].amps + 1e-6
    assert q.idle_amps == pytest.approx(9.76e-6) and display_amps(False, False, 0, False) == 1e-6
    assert q.day_coulombs == pytest.approx(20 * 1e-3 + 20 * shown_q +
                                           idle_q * (86_400 - 20 * 10.58))


def test_sleep_model_errors():
    """A wait for an interrupt, EXTI interrupts and a sleep with no wake-up source are named."""
    m, p = i2c_ready()
    p.wfi()  # WFITOWFE clear
    assert "waits for an interrupt" in m.error
    m, p = i2c_ready()
    p.write(0x40010400, 4, 1 << 3)
    assert "EXTI interrupts" in m.error
    m, p = i2c_ready()
    p.write(0xE000ED10, 4, 1 << 3)
    p.wfi()
    assert "no wake-up source" in m.error


def test_display_timeout_zero_keeps_the_display_on(die_dir, tmp_path):
    run_dir = die_dir.parent / "run"
    with pytest.raises(BitmcuError, match="--led PC3: the die uses it"):
        build_die(run_dir, out=tmp_path / "x", options=DieOptions(led="PC3"))
    build_die(run_dir, out=tmp_path / "d", options=DieOptions(display_timeout_s=0, led="PD6"))
    run = roll_die(tmp_path / "d", presses=[(300, 60), (14_000, 60)])
    assert check_frames(run) == [] and len(run.rolls) == 3
    assert [s.cause for s in run.sleeps] == ["button", "button"]  # no auto-wakeup
    assert run.led_changes == 3 and run.uart_errors() == []  # the LED toggles at each roll
    assert not any(s.lsi for s in run.sleeps)  # the LSI off: 8.76 uA instead of 10.26
    first = next(i for i, (_, on, *_) in enumerate(run.display_history) if on)
    assert all(on for _, on, *_ in run.display_history[first:])  # on after the init, never off
    assert all(powered for *_, powered in run.display_history[1:])  # never switched off
    assert DieOptions(display_timeout_s=10).awu() == (21, 1)  # 21 x 0.48 s = 10.08 s
    assert DieOptions(display_timeout_s=60).awu() == (62, 2)  # 2 x 62 x 0.48 s = 59.52 s


def test_dma_to_i2c_model_refuses_what_it_does_not_model():
    """DMA1 channel 6 feeds I2C1's data register from memory; enabling it before CTLR2.DMAEN,
    with another direction or peripheral address, or disabling it with bytes left is named."""
    m, p = i2c_ready()
    p.write(0x40020074, 4, 0x40005410)  # PADDR6: I2C1's DATAR
    p.write(0x4002006C, 4, 1 << 7 | 1 << 4 | 1)  # EN before I2C1's DMAEN
    assert "before I2C1's CTLR2.DMAEN" in m.error
    m, p = i2c_ready()
    p.write(0x40020074, 4, 0x40013804)  # USART1's DATAR
    p.write(0x40005404, 4, 1 << 11)
    p.write(0x4002006C, 4, 1 << 7 | 1 << 4 | 1)
    assert "to I2C1's DATAR only" in m.error
