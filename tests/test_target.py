"""Firmware for CH32V003/CH32V002 built with the real cross compiler and run in Unicorn."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bitmcu.apps.pipeline import export
from bitmcu.core.errors import BitmcuError
from bitmcu.deploy.export import model_report, write_export
from bitmcu.deploy.ir import FCLayer, IntModel
from bitmcu.target.chips import CHIPS
from bitmcu.target.emulator import profile
from bitmcu.target.firmware import GCC, build_firmware, files_dir, linker_script, worst_stack

from .conftest import FakeMachine

pytestmark = pytest.mark.skipif(shutil.which(GCC) is None, reason=f"{GCC} not installed")


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    export(tiny_run, out, target="ch32v003")
    return out


@pytest.mark.parametrize("mcu", ["ch32v003", "ch32v002"])
@pytest.mark.parametrize("hot", ["sram", "flash"])
def test_firmware_runs_in_the_emulator_and_matches_the_reference(tiny_export, tmp_path, mcu, hot):
    info = build_firmware(tiny_export, mcu, tmp_path / "fw", n_images=6, hot_loops=hot)
    for ext in ("elf", "bin", "hex", "map"):
        assert (tmp_path / "fw" / f"firmware.{ext}").is_file()
    prof = profile(info.elf)
    assert [i.pred for i in prof.inferences] == info.expected
    assert prof.mismatches == 0 and len(prof.inferences) == 6
    assert [n for n, _ in prof.inferences[0].segments] == ["input", "layer 0", "layer 1"]
    assert sum(c for _, c in prof.inferences[0].segments) == prof.inferences[0].cycles
    assert 0 < prof.ram["stack_peak"] < 512 and prof.ram["total"] <= prof.ram["size"]
    assert info.stack_bound >= prof.ram["stack_peak"]  # the static bound covers what ran
    assert prof.flash["total"] <= 16 * 1024
    dis = subprocess.run(["riscv64-unknown-elf-objdump", "-d", info.elf], capture_output=True,
                         text=True).stdout
    has_mul = any("\tmul\t" in line for line in dis.splitlines())
    assert has_mul == CHIPS[mcu].has_mul  # V003: no multiply instruction anywhere
    if hot == "sram":
        assert "20000000 <bitmcu_fc_4bitsym>" in dis
    # a fully connected model links no convolution code and no unused kernels
    for unused in ("<bitmcu_front_end>", "<bitmcu_front_end_8bit>", "<bitmcu_conv3x3>",
                   "<bitmcu_fc_8bit>"):
        assert unused not in dis


@pytest.mark.parametrize("mcu", ["ch32v003", "ch32v002"])
def test_firmware_prints_its_results_on_usart1_and_blinks(tiny_export, tmp_path, mcu):
    """Every firmware prints each prediction, its label and its SysTick cycles on USART1 (PD5,
    115200 8N1) and a summary; the profile captures the text and checks it against what it
    measured; the LED toggles once per inference."""
    from bitmcu.target.emulator import UART_SLACK, check_uart

    info = build_firmware(tiny_export, mcu, tmp_path / "fw", n_images=3, led="PC0")
    assert info.led == "PC0"
    prof = profile(info.elf)
    lines = prof.uart.splitlines()
    assert len(lines) == 4 and prof.uart.endswith("\r\n")
    for i, (inf, ln) in enumerate(zip(prof.inferences, lines, strict=False)):
        head = f"image {i}: prediction {inf.pred}, label {info.labels[i]}, "
        assert ln.startswith(head) and ln.endswith(" cycles, status 0")
        printed = int(ln[len(head):].split()[0])
        assert abs(printed - inf.cycles) <= UART_SLACK  # SysTick agrees with the cycle model
    assert lines[-1] == "done: 3 images, 0 errors"
    assert prof.uart_errors == [] and prof.led_changes == 3
    assert "USART1 (115200 8N1 on PD5) printed 4 lines" in prof.text()
    assert "the printed results equal the profile's" in prof.text()
    # a printed line that disagrees is named
    prof.uart = prof.uart.replace(f"prediction {prof.inferences[0].pred}",
                                  f"prediction {prof.inferences[0].pred + 1}", 1)
    assert any("disagrees with the profile" in e for e in check_uart(prof, info.labels))
    with pytest.raises(BitmcuError, match="--led 'PD5' is not allowed"):
        build_firmware(tiny_export, mcu, tmp_path / "x", led="PD5")


def test_usart_model_times_bytes_and_checks_its_set_up():
    """USART1: a byte is 10 bit times of BRR core clocks; TXE while the data register is free,
    TC once the wire is idle (a status poll that can only wait moves the clock); a byte with the
    transmitter off or TX not routed to PD5 is an error."""
    from bitmcu.target.peripherals import Peripherals

    m = FakeMachine()
    p = Peripherals(m)
    u = 0x40013800
    p.write(u + 0x04, 4, 0x41)
    assert "transmitter off" in m.error
    m = FakeMachine()
    p = Peripherals(m)
    p.write(u + 0x08, 4, 417)  # 115,108 baud at 48 MHz
    p.write(u + 0x0C, 4, 1 << 13 | 1 << 3)
    p.write(u + 0x04, 4, 0x41)
    assert "TX does not reach a pin" in m.error
    m = FakeMachine()
    p = Peripherals(m)
    p.write(0x40011400, 4, 0x44944444)  # PD5: alternate-function push-pull
    p.write(u + 0x08, 4, 417)
    p.write(u + 0x0C, 4, 1 << 13 | 1 << 3)
    p.write(u + 0x04, 4, ord("h"))  # on the wire at once
    assert p.read(u, 4) == 1 << 7  # TXE, not TC
    p.write(u + 0x04, 4, ord("i"))  # waits in the data register
    assert p.read(u, 4) == 1 << 7 and m.t == 4170  # TXE came when "h" was done
    assert p.read(u, 4) == 1 << 7 | 1 << 6 and m.t == 8340  # polled again: waits for TC
    assert p.usart.text == "hi" and m.error is None
    assert p.usart.baud() == pytest.approx(115_108, rel=1e-4)


def test_relative_paths(tiny_export, tmp_path, monkeypatch):
    shutil.copytree(tiny_export, tmp_path / "exp")
    monkeypatch.chdir(tmp_path)
    info = build_firmware("exp", "ch32v002", n_images=2)
    assert profile(info.elf).mismatches == 0
    assert (tmp_path / "exp" / "firmware-ch32v002" / "firmware.elf").is_file()


def test_profile_on_more_images_than_the_firmware_embeds(tiny_export, tmp_path, capsys):
    """Test images written over the embedded ones in the emulated flash give, image for image,
    the cycles and prediction of a firmware built with that image embedded."""
    from bitmcu.cli import main
    from bitmcu.deploy.export import export_test_images, read_export

    images, expected = export_test_images(tiny_export, 7)
    one = build_firmware(tiny_export, "ch32v003", tmp_path / "one", n_images=1)
    prof = profile(one.elf, images=images, expected=expected)
    assert [i.index for i in prof.inferences] == list(range(7))
    assert [i.pred for i in prof.inferences] == expected and prof.mismatches == 0
    # a firmware built with image 5 as its only image: the same cycles for it
    model = read_export(tiny_export)
    with np.load(tiny_export / "test_set.npz") as f:
        x, y = f["images"], f["labels"]
    write_export(model, tmp_path / "exp5", x[5:], y[5:], model_report(model, "ch32v003"),
                 target="ch32v003", n_images=1)
    five = profile(build_firmware(tmp_path / "exp5", "ch32v003", n_images=1).elf)
    assert five.inferences[0].cycles == prof.inferences[5].cycles
    assert five.inferences[0].pred == prof.inferences[5].pred
    # three slots, seven images: three runs, the last one short
    three = build_firmware(tiny_export, "ch32v003", tmp_path / "three", n_images=3)
    prof3 = profile(three.elf, images=images, expected=expected)
    assert [i.index for i in prof3.inferences] == list(range(7)) and prof3.mismatches == 0
    wrong = [(e + 1) % 10 for e in expected]
    assert profile(one.elf, images=images[:2], expected=wrong[:2]).mismatches == 2
    # the CLI: the export is the folder above the ELF's unless given
    assert main(["profile", str(tmp_path / "one" / "firmware.elf"), "--export", str(tiny_export),
                 "--test-images", "7"]) == 0
    assert "7 inferences" in capsys.readouterr().out
    assert main(["profile", str(tmp_path / "one" / "firmware.elf"), "--test-images", "7"]) == 2
    assert "not the firmware's export folder" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "one" / "firmware.elf"), "--export", str(tiny_export),
                 "--test-images", "101"]) == 2
    assert "the export holds 100 test images" in capsys.readouterr().err


def test_sram_kernels_are_faster(tiny_export, tmp_path):
    cyc = {}
    for hot in ("sram", "flash"):
        info = build_firmware(tiny_export, "ch32v003", tmp_path / hot, n_images=3, hot_loops=hot)
        cyc[hot] = profile(info.elf).median_cycles()
    assert cyc["sram"] < cyc["flash"]


def test_auto_placement_moves_the_kernels_to_flash_only_where_sram_overflows(
        tiny_export, tmp_path, monkeypatch):
    from bitmcu.target import firmware as fw

    auto = build_firmware(tiny_export, "ch32v003", tmp_path / "auto", n_images=2)
    assert auto.hot_loops == "sram" and auto.hot_loops_note == ""
    # the RAM left free with the kernels in SRAM and in flash
    free = {}
    for hot in ("sram", "flash"):
        info = build_firmware(tiny_export, "ch32v003", tmp_path / hot, n_images=2, hot_loops=hot)
        data, bss = fw._ram_use(Path(info.elf))
        free[hot] = 2048 - data - bss - info.stack_bound
    assert free["flash"] > free["sram"] >= 0
    # a RAM need that only every kernel in flash leaves room for: auto falls back to flash and
    # says why; sram is refused
    extra = free["flash"]
    over = extra - free["sram"]
    real = fw._ram_use
    monkeypatch.setattr(fw, "_ram_use", lambda elf: (real(elf)[0], real(elf)[1] + extra))
    info = build_firmware(tiny_export, "ch32v003", tmp_path / "auto2", n_images=2)
    assert info.hot_loops == "flash"
    assert info.hot_loops_note == f"in SRAM they would overflow the RAM by {over} bytes"
    assert profile(info.elf).mismatches == 0
    with pytest.raises(BitmcuError, match=f"RAM overflowed by {over} bytes"):
        build_firmware(tiny_export, "ch32v003", tmp_path / "sram2", n_images=2, hot_loops="sram")


def test_auto_placement_moves_the_least_used_kernel_to_flash_first(tmp_path, monkeypatch):
    from bitmcu.target import firmware as fw

    rng = np.random.default_rng(5)
    layers = [FCLayer.from_levels("ternary", rng.integers(-1, 2, (40, 256)), relu=True),
              FCLayer.from_levels("4bitsym", rng.choice(np.arange(-15, 16, 2), (10, 40)),
                                  relu=False)]
    model = IntModel.classifier(16, 10, 255, layers, 1, "two kernels").validate()
    x = rng.integers(0, 256, (4, 256)).astype(np.uint8)
    write_export(model, tmp_path / "exp", x, np.arange(4), model_report(model, "ch32v002"))
    assert fw.hot_kernels(model, CHIPS["ch32v002"]) == ["bitmcu_shiftnorm", "bitmcu_fc_4bitsym",
                                                        "bitmcu_fc_ternary"]
    sram = build_firmware(tmp_path / "exp", "ch32v002", tmp_path / "sram", n_images=2,
                          hot_loops="sram")
    data, bss = fw._ram_use(Path(sram.elf))
    extra = 4096 - data - bss - sram.stack_bound + 1  # all in SRAM overflows by 1 byte
    real = fw._ram_use
    monkeypatch.setattr(fw, "_ram_use", lambda elf: (real(elf)[0], real(elf)[1] + extra))
    info = build_firmware(tmp_path / "exp", "ch32v002", tmp_path / "auto", n_images=2)
    assert info.hot_loops == "sram" and info.flash_kernels == ["bitmcu_shiftnorm"]
    assert info.hot_loops_note == ("but bitmcu_shiftnorm in flash: with all in SRAM the RAM "
                                   "would overflow by 1 bytes")
    dis = subprocess.run(["riscv64-unknown-elf-objdump", "-d", info.elf], capture_output=True,
                         text=True).stdout
    addr = {name: int(next(line.split()[0] for line in dis.splitlines()
                           if f"<{name}>:" in line), 16)
            for name in ("bitmcu_shiftnorm", "bitmcu_fc_4bitsym", "bitmcu_fc_ternary")}
    assert addr["bitmcu_shiftnorm"] < 0x20000000  # in flash
    assert addr["bitmcu_fc_4bitsym"] >= 0x20000000 and addr["bitmcu_fc_ternary"] >= 0x20000000
    prof = profile(info.elf)
    assert prof.mismatches == 0 and [i.pred for i in prof.inferences] == info.expected


def test_model_too_large_for_flash_names_region_and_bytes(tmp_path):
    rng = np.random.default_rng(0)
    layers = [FCLayer.from_levels("8bit", rng.integers(-127, 128, (80, 256)), relu=True),
              FCLayer.from_levels("8bit", rng.integers(-127, 128, (10, 80)), relu=False)]
    model = IntModel.classifier(16, 10, 255, layers, 1, "big").validate()
    x = rng.integers(0, 256, (4, 256)).astype(np.uint8)
    write_export(model, tmp_path / "big", x, np.arange(4), model_report(model, "ch32v003"))
    with pytest.raises(BitmcuError, match=r"flash overflowed by \d+ bytes \(16384 bytes") as e:
        build_firmware(tmp_path / "big", "ch32v003", tmp_path / "fw", n_images=2)
    assert "alone do not fit" in str(e.value) and "fewer" not in str(e.value)
    assert not (tmp_path / "fw").exists()
    # a model that fits with one image but not with four: the hint names the count that fits
    layers = [FCLayer.from_levels("8bit", rng.integers(-127, 128, (52, 256)), relu=True),
              FCLayer.from_levels("8bit", rng.integers(-127, 128, (10, 52)), relu=False)]
    model = IntModel.classifier(16, 10, 255, layers, 1, "fits").validate()
    write_export(model, tmp_path / "fits", x, np.arange(4), model_report(model, "ch32v003"))
    build_firmware(tmp_path / "fits", "ch32v003", tmp_path / "fw1", n_images=1)
    for n in range(2, 5):
        try:
            build_firmware(tmp_path / "fits", "ch32v003", tmp_path / f"fw{n}", n_images=n)
        except BitmcuError as err:
            assert f"--images {n - 1} fits" in str(err)
            break
    else:
        raise AssertionError("never overflowed")


def test_worst_case_stack_from_the_call_graph(tmp_path):
    (tmp_path / "a.ci").write_text(
        'node: { title: "main" label: "main\\nfw_main.c:1:1\\n64 bytes (static)" }\n'
        'node: { title: "run" label: "run\\nbitmcu.c:1:1\\n80 bytes (static)" }\n'
        'node: { title: "__indirect_call" label: "Indirect Call Placeholder" shape : ellipse }\n'
        'node: { title: "front" label: "front\\nbitmcu.c:2:1\\n120 bytes (static)" }\n'
        'node: { title: "conv" label: "conv\\nbitmcu.c:3:1\\n312 bytes (static)" }\n'
        'node: { title: "fc" label: "fc\\nbitmcu.c:4:1\\n40 bytes (static)" }\n'
        'edge: { sourcename: "main" targetname: "run" }\n'
        'edge: { sourcename: "run" targetname: "__indirect_call" }\n'
        'edge: { sourcename: "front" targetname: "conv" }\n'
        'edge: { sourcename: "front" targetname: "__mulsi3" }\n')
    assert worst_stack([tmp_path / "a.ci"]) == 64 + 80 + 120 + 312
    # by the pointer's type: the entry points call op functions only, the op functions' own
    # indirect calls (kernels) never reach an op function
    (tmp_path / "c.ci").write_text(
        'node: { title: "main" label: "main\\nfw_main.c:1:1\\n64 bytes (static)" }\n'
        'node: { title: "bitmcu_run" label: "r\\nbitmcu.c:1:1\\n50 bytes (static)" }\n'
        'node: { title: "bitmcu_step_fc" label: "s\\nbitmcu.c:2:1\\n20 bytes (static)" }\n'
        'node: { title: "bitmcu_front_end" label: "f\\nbitmcu.c:2:1\\n200 bytes (static)" }\n'
        'node: { title: "bitmcu_fc_8bit" label: "k\\nbitmcu.c:3:1\\n100 bytes (static)" }\n'
        'node: { title: "bitmcu_conv3x3" label: "c\\nbitmcu.c:3:1\\n30 bytes (static)" }\n'
        'edge: { sourcename: "main" targetname: "bitmcu_run" }\n'
        'edge: { sourcename: "bitmcu_run" targetname: "__indirect_call" }\n'
        'edge: { sourcename: "bitmcu_step_fc" targetname: "__indirect_call" }\n'
        'edge: { sourcename: "bitmcu_front_end" targetname: "bitmcu_conv3x3" }\n')
    assert worst_stack([tmp_path / "c.ci"]) == 64 + 50 + 200 + 30  # not 20 + 200 + 100
    assert worst_stack([tmp_path / "c.ci"], linked={"main", "bitmcu_run", "bitmcu_step_fc",
                                                    "bitmcu_fc_8bit"}) == 64 + 50 + 20 + 100
    (tmp_path / "b.ci").write_text(
        'node: { title: "main" label: "main\\nx.c:1:1\\n64 bytes (dynamic)" }\n')
    assert worst_stack([tmp_path / "b.ci"]) is None  # unbounded: no claim


def test_stack_that_does_not_fit_is_refused(tiny_export, tmp_path, monkeypatch):
    import bitmcu.target.firmware as fw

    monkeypatch.setattr(fw, "worst_stack", lambda files, **kw: 4096)
    with pytest.raises(BitmcuError, match=r"ch32v003: RAM overflowed by \d+ bytes .*worst-case "
                                          r"stack 4096 > 2048 bytes"):
        build_firmware(tiny_export, "ch32v003", tmp_path / "fw", n_images=2)
    assert not (tmp_path / "fw").exists()


def test_bad_arguments(tiny_export, tmp_path):
    with pytest.raises(BitmcuError, match="'esp32' is not supported.*ch32v003"):
        build_firmware(tiny_export, "esp32")
    with pytest.raises(BitmcuError, match="--hot-loops 'rom'"):
        build_firmware(tiny_export, "ch32v003", hot_loops="rom")
    with pytest.raises(BitmcuError, match="not a bitmcu export folder"):
        build_firmware(tmp_path, "ch32v003")
    (tmp_path / "x.elf").write_bytes(b"\x7fELF junk")
    with pytest.raises(BitmcuError, match="not a readable ELF"):
        profile(tmp_path / "x.elf", "ch32v003")


SNIPPET = """
    .option norvc
    .option norelax
    .section .init, "ax"
    .globl _start
_start:
    la a1, bitmcu_marker
    li a2, 0x01000000
    sw a2, 0(a1)          /* image 0 starts: counting includes this store */
    li a0, 10
1:  addi a0, a0, -1
    bnez a0, 1b
    li a2, 0x03000005
    sw a2, 0(a1)          /* image 0 ends, prediction 5 */
    li a2, 0x04000000
    sw a2, 0(a1)          /* done */
2:  j 2b
    .bss
    .globl bitmcu_marker
bitmcu_marker: .word 0
"""


@pytest.mark.parametrize("mcu, expected", [
    # from flash, all 32-bit instructions: li a0 (1 insn) + 10 x (addi + bnez) + li a2 (lui+addi)
    # + sw = 24 instructions. V003: each costs one 32-bit flash word = 2 cycles (sw: max(2, 2)),
    # 9 taken branches x 4 = 36, each hiding the fetch wait of its target (the addi: 1 of its 2
    # cycles): 48 + 36 - 9 = 75.
    ("ch32v003", 24 * 2 + 9 * 4 - 9 * 1),
    # V002: a flash word costs 3 cycles, a taken branch from flash 6, hiding 2 of the addi's 3:
    # 72 + 54 - 18 = 108.
    ("ch32v002", 24 * 3 + 9 * 6 - 9 * 2),
])
def test_cycle_model_on_a_hand_written_snippet(tmp_path, mcu, expected):
    chip = CHIPS[mcu]
    (tmp_path / "s.S").write_text(SNIPPET)
    (tmp_path / "link.ld").write_text(linker_script(chip))
    subprocess.run([GCC, *chip.cflags, "-nostdlib", "-T", str(tmp_path / "link.ld"),
                    str(tmp_path / "s.S"), "-o", str(tmp_path / "s.elf")], check=True)
    prof = profile(tmp_path / "s.elf", mcu)
    (inf,) = prof.inferences
    assert inf.pred == 5 and inf.insns == 24
    assert inf.cycles == expected
    assert files_dir().is_dir()


def test_bitmcu_run_goes_all_the_way(tmp_path):
    import sys

    from tests.conftest import tiny_overrides

    sets = [x for s in tiny_overrides(**{"train.epochs": 1, "model.hidden": "[16]"})
            for x in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "bitmcu.cli", "run", *sets, "--out",
                        str(tmp_path / "r"), "--quiet", "--mcu", "ch32v002"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for word in ("accuracy:", "weights:", "ch32v002:", "cycles per inference", "== reference: yes"):
        assert word in r.stdout
    assert (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize("conv_scheme, bias_unit, mult", [("fp130", True, 1), ("8bit", False, 2)])
def test_cnn_through_firmware_on_both_chips(tmp_path, conv_scheme, bias_unit, mult):
    from bitmcu.apps.pipeline import verify
    from bitmcu.train import load_checkpoint, model_from_checkpoint, train
    from bitmcu.train.config import load_config
    from bitmcu.train.stats import layer_stats
    from tests.conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(**{
        "model.family": "cnn", "model.channels": 6, "model.conv_scheme": conv_scheme,
        "model.hidden": "[16]", "train.epochs": 2, "data.train_limit": 1000,
        "model.bias_unit": str(bias_unit).lower(), "model.conv": f"[dw, pool, dw*{mult}, pool]"}))
    run = train(cfg, run_dir=tmp_path / "run", quiet=True)
    ver = verify(run)  # raises on any logit difference
    assert ver.int_acc == ver.c_acc["mul"] == ver.c_acc["nomul"]
    rep = export(run, tmp_path / "exp")
    assert [r["op"] for r in rep.layers] == ["conv1", "dw", "pool", "dw", "pool", "fc", "fc"]
    assert (rep.layers[3]["n_in"], rep.layers[3]["n_out"]) == ("6x6x6", f"{6 * mult}x4x4")
    stats = layer_stats(model_from_checkpoint(load_checkpoint(run)))  # `bitmcu info`
    assert [s.name for s in stats] == ["conv1", "dw1", "dw2", "fc0", "fc1"]
    assert [s.scheme for s in stats[:3]] == [conv_scheme] * 3 and stats[0].shape == (6, 9)
    assert stats[2].shape == (6 * mult, 9) and stats[3].shape[1] == 6 * mult * 4 + bias_unit
    assert sum(s.bytes for s in stats) == rep.weight_bytes
    for mcu in ("ch32v003", "ch32v002"):
        info = build_firmware(tmp_path / "exp", mcu, tmp_path / mcu, n_images=3)
        prof = profile(info.elf)
        assert prof.mismatches == 0 and [i.pred for i in prof.inferences] == info.expected
        assert prof.ram["total"] <= prof.ram["size"]
        assert info.stack_bound >= prof.ram["stack_peak"]
        # all-8-bit convolutions: the entry point without the any-scheme weight decoder
        dis = subprocess.run(["riscv64-unknown-elf-objdump", "-d", info.elf], capture_output=True,
                             text=True).stdout
        entry = "bitmcu_front_end_8bit" if conv_scheme == "8bit" else "bitmcu_front_end"
        assert f"<{entry}>:" in dis
        if mcu == "ch32v002":  # there the decoder is a function of its own, kept in flash
            assert ("<level_at" in dis) == (conv_scheme != "8bit")
            assert "<maxpool2>:" not in dis  # inlined: the front end runs wholly from SRAM


def test_bitmcu_run_refuses_an_unknown_chip_before_training(tmp_path):
    from bitmcu.apps.pipeline import run_all

    with pytest.raises(BitmcuError, match="--mcu 'esp32' is not supported; use 'ch32v003'"):
        run_all(None, [], tmp_path / "run", mcu="esp32")
    assert not (tmp_path / "run").exists()


def test_profile_stops_at_max_instructions_and_says_how_to_raise_it(tiny_export, tmp_path):
    from bitmcu.cli import main

    info = build_firmware(tiny_export, "ch32v003", tmp_path / "fw", n_images=1)
    with pytest.raises(BitmcuError, match="no DONE marker after 1,000 instructions.*--max-instr"):
        profile(info.elf, max_insns=1000)
    assert main(["profile", info.elf, "--max-instructions", "50000000"]) == 0
    assert main(["profile", info.elf, "--max-instructions", "0"]) == 2


def test_a_malformed_firmware_json_is_one_clear_error(tiny_export, tmp_path):
    info = build_firmware(tiny_export, "ch32v003", tmp_path / "fw", n_images=1)
    meta = tmp_path / "fw" / "firmware.json"
    for text, msg in [("{not json", "not valid JSON"), ("[1, 2]", "not a bitmcu firmware.json"),
                      ('{"mcu": 3}', "not a bitmcu firmware.json")]:
        meta.write_text(text)
        with pytest.raises(BitmcuError, match=msg):
            profile(info.elf)


def test_an_unwritable_json_path_is_one_clear_error(tiny_export, tmp_path, capsys):
    from bitmcu.cli import main

    info = build_firmware(tiny_export, "ch32v003", tmp_path / "fw", n_images=1)
    (tmp_path / "adir").mkdir()
    assert main(["profile", info.elf, "--json", str(tmp_path / "adir")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitmcu: error: ") and "adir" in err and "Traceback" not in err
    assert main(["profile", info.elf, "--json", str(tmp_path / "missing" / "p.json")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
