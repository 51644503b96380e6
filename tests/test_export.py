import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitmcu.apps.pipeline import export, verify
from bitmcu.core.errors import BitmcuError

from .conftest import restamp

ROOT = Path(__file__).resolve().parents[1]


def test_export_writes_a_complete_deterministic_package(tiny_run, tmp_path):
    rep = export(tiny_run, tmp_path / "a", command="bitmcu export tiny")
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"model.h", "bitmcu.c", "bitmcu.h", "main.c", "test_images.h", "Makefile",
            "model.npz", "report.txt", "report.json"} <= files
    assert not list(tmp_path.glob(".a.bitmcu-stage-*"))  # no staging folder left
    h = (tmp_path / "a" / "model.h").read_text()
    assert "do not edit" in h and "command: bitmcu export tiny" in h
    assert "static const bitmcu_layer bitmcu_layers[2 + 1]" in h and "bitmcu_fc_4bitsym" in h
    export(tiny_run, tmp_path / "b", command="bitmcu export tiny")
    assert (tmp_path / "b" / "model.h").read_text() == h
    assert rep.weight_bytes == 256 * 24 // 2 + 24 * 10 // 2
    assert abs(rep.int_acc - rep.float_acc) <= 0.02 and rep.n_test == 500
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["arena_bytes"] == 4 * (24 + 128)
    assert report["input"] == ("16x16 uint8 pixels, 0 = background: area downscaling of the "
                               "whole source image")
    assert "input: 16x16 uint8 pixels" in (tmp_path / "a" / "report.txt").read_text()


def test_example_program_builds_and_agrees(tiny_run, tmp_path):
    export(tiny_run, tmp_path / "e", n_images=5)
    r = subprocess.run(["make", "-s", "-C", str(tmp_path / "e"), "CFLAGS=-std=c99 -O2 -Wall "
                        "-Wextra -Wconversion -pedantic -Werror"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(tmp_path / "e" / "example")], capture_output=True, text=True)
    assert r.returncode == 0 and "5/5 equal to the reference" in r.stdout


def test_verify_on_the_subset(tiny_run):
    res = verify(tiny_run)
    assert res.n == 500 and set(res.c_acc) == {"mul", "nomul"}
    assert res.c_acc["mul"] == res.c_acc["nomul"] == res.int_acc
    assert abs(res.int_acc - res.float_acc) <= 0.02


@pytest.mark.parametrize("change, msg", [
    (("model", "norm", "layer"), "model.norm='rms'"),
    (("model", "scale", "per_channel"), "model.scale='per_tensor'"),
    (("model", "scheme", "none"), "cannot be exported"),
])
def test_export_refuses_unsupported_models_and_writes_nothing(tiny_run, tmp_path, change, msg):
    blob = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    sec, key, val = change
    blob["config"][sec][key] = val
    torch.save(restamp(blob), tmp_path / "x.pt")  # as a run trained with that config
    with pytest.raises(BitmcuError, match=msg):
        export(tmp_path / "x.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_and_verify(tiny_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "bitmcu.cli", "export", str(tiny_run), "--out",
                        str(tmp_path / "o"), "--target", "ch32v003"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "total weight bytes" in r.stdout and "integer" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bitmcu.cli", "export", str(tiny_run), "--out",
                        str(tmp_path / "p"), "--target", "esp32"], capture_output=True, text=True)
    assert r.returncode == 2 and "'esp32' is not known" in r.stderr and "ch32v003" in r.stderr
    r = subprocess.run([sys.executable, "-m", "bitmcu.cli", "verify", str(tiny_run), "--limit",
                        "100"], capture_output=True, text=True)
    assert r.returncode == 0 and "equal the numpy reference's for every image" in r.stdout


def test_bias_unit_model_exports_and_verifies(tmp_path):
    from bitmcu.train import train
    from bitmcu.train.config import load_config

    from .conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(**{"model.bias_unit": "true", "train.epochs": 2,
                                              "model.hidden": "[20, 12]"}))
    run = train(cfg, run_dir=tmp_path / "r", quiet=True)
    res = verify(run)
    assert res.c_acc["nomul"] == res.int_acc and abs(res.int_acc - res.float_acc) <= 0.02
    rep = export(run, tmp_path / "e")
    assert [(r["n_in"], r["n_out"]) for r in rep.layers] == [(257, 20), (21, 12), (13, 10)]


def test_report_says_how_the_device_must_frame_its_images():
    from bitmcu.train.config import load_config

    d = load_config(None, ["data.crop=22", "data.resize=bilinear"]).data
    assert d.input_description() == ("16x16 uint8 pixels, 0 = background: bilinear downscaling "
                                    "of the central 22x22 of the source image")


def test_in_chunks_equals_one_call():
    import numpy as np

    from bitmcu.deploy.verify import in_chunks

    x = np.arange(1234 * 3).reshape(1234, 3)
    fn = lambda a: a * 2 + 1  # noqa: E731
    assert np.array_equal(in_chunks(fn, x, "t", size=500), fn(x))
    assert in_chunks(fn, x[:0], "t").shape == (0, 3)


@pytest.mark.parametrize("how, msg", [
    ("nan", r"weights '.*' hold NaN or infinite values"),
    ("inf", r"weights '.*' hold NaN or infinite values"),
    ("1e30", r"integer model's test accuracy .* differs from the float model's .* by more than 2 "
             r"points.*nothing written.*--allow-mismatch"),
    ("scheme", r"config was changed after its weights were saved"),
])
def test_export_refuses_a_silently_wrong_model(tiny_run, tmp_path, how, msg):
    blob = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    name = next(k for k, v in blob["model"].items() if v.is_floating_point() and v.dim() == 2)
    if how == "nan":
        blob["model"][name][0, 0] = float("nan")
    elif how == "inf":
        blob["model"][name][1, 2] = float("inf")
    elif how == "1e30":
        for k, v in blob["model"].items():
            if v.is_floating_point() and v.dim() == 2:
                blob["model"][k] = v * 1e30
    else:  # the stored config edited to another scheme, its digest left as it was
        blob["config"]["model"]["scheme"] = "ternary"
    torch.save(blob, tmp_path / "x.pt")
    with pytest.raises(BitmcuError, match=msg):
        export(tmp_path / "x.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    if how == "1e30":  # asked for: written, its report saying how far apart the two are
        rep = export(tmp_path / "x.pt", tmp_path / "out", allow_mismatch=True)
        assert abs(rep.float_acc - rep.int_acc) > 0.02 and (tmp_path / "out" / "model.h").is_file()


def test_two_exports_into_one_folder_the_second_is_refused(tiny_run, tmp_path):
    """The first export holds its folder from its start: a second one into the same folder is
    refused at once with the first one's pid, and the first one finishes."""
    out = tmp_path / "o"
    first = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from bitmcu.apps import pipeline as e\n"
        "real = e._export\n"
        "def slow(*a, **k):\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.readline()\n"  # until the test lets it go on
        "    return real(*a, **k)\n"
        "e._export = slow\n"
        f"e.export({str(tiny_run)!r}, {str(out)!r})\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "holding"
    r = subprocess.run([sys.executable, "-m", "bitmcu.cli", "export", str(tiny_run), "--out",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and f"in use by another bitmcu process (pid {first.pid}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    first.stdin.write("\n")
    first.stdin.close()
    assert first.wait() == 0 and (out / "model.npz").is_file()


def test_export_images_are_bounded(tiny_run, tmp_path, capsys):
    from bitmcu.cli import main

    assert main(["export", str(tiny_run), "--out", str(tmp_path / "o"), "--images",
                 "10000000"]) == 2
    err = capsys.readouterr().err
    assert "--images 10000000: embed 1..10000 test images" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_no_hidden_layers_is_a_linear_classifier_that_deploys(tmp_path):
    """model.hidden=[] is accepted on purpose: one fc layer from the pixels to the classes, the
    smallest model there is, trained, exported and verified like any other."""
    from bitmcu.train import train
    from bitmcu.train.config import load_config

    from .conftest import tiny_overrides

    run = train(load_config(None, tiny_overrides(**{"model.hidden": "[]", "train.epochs": 2})),
                run_dir=tmp_path / "lin", quiet=True)
    rep = export(run, tmp_path / "exp", target="ch32v003")
    assert [(r["n_in"], r["n_out"]) for r in rep.layers] == [(256, 10)]
    assert rep.int_acc > 0.5
    res = verify(run, limit=100)
    assert res.c_acc["mul"] == res.c_acc["nomul"] == res.int_acc


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                    reason="RISC-V cross compiler not installed")
def test_a_ch32fun_project_folder_holds_the_layout_and_compiles_for_the_ch32v003(tiny_run,
                                                                                 tmp_path):
    """export --project ch32fun: a Makefile that includes ch32fun.mk, funconfig.h (printf on
    USART1), main.c and the engine, model and images; its C files compile and link for the
    CH32V003 with bitmcu's own startup and linker script (ch32fun itself cannot be fetched here:
    tests/data/ch32fun/ch32fun.h stands in for its header)."""
    from bitmcu.target.chips import get_chip
    from bitmcu.target.firmware import GCC, files_dir, linker_script

    out = tmp_path / "exp"
    export(tiny_run, out, target="ch32v003", n_images=2, project="ch32fun")
    d = out / "ch32fun"
    assert sorted(p.name for p in d.iterdir()) == [
        "Makefile", "bitmcu.c", "bitmcu.h", "funconfig.h", "main.c", "model.h", "test_images.h"]
    make = (d / "Makefile").read_text()
    for line in ("TARGET := main", "TARGET_MCU ?= CH32V003", "include $(CH32FUN)/ch32fun.mk",
                 "ADDITIONAL_C_FILES += bitmcu.c", "flash : cv_flash"):
        assert line in make.splitlines()
    assert "#define FUNCONF_USE_UARTPRINTF 1" in (d / "funconfig.h").read_text()
    main = (d / "main.c").read_text()
    assert '#include "ch32fun.h"' in main and "SysTick->CNT" in main and "bitmcu_run(" in main
    chip = get_chip("ch32v003")
    (tmp_path / "link.ld").write_text(linker_script(chip))
    # bitmcu's startup code reports the end of main through this word (the profiler's marker)
    (tmp_path / "marker.c").write_text("#include <stdint.h>\nvolatile uint32_t bitmcu_marker;\n")
    files = files_dir()
    r = subprocess.run(
        [GCC, *chip.cflags, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffreestanding",
         "-nostdlib", "-ffunction-sections", "-fdata-sections", "-fno-builtin",
         f"-I{ROOT / 'tests' / 'data' / 'ch32fun'}", f"-I{d}", str(files / "startup.S"),
         str(d / "main.c"), str(d / "bitmcu.c"), str(files / "mem.c"), str(tmp_path / "marker.c"),
         "-T",
         str(tmp_path / "link.ld"), "-Wl,--gc-sections", "-lgcc", "-o", str(tmp_path / "p.elf")],
        capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def test_a_project_the_export_cannot_write_is_refused_before_any_work(tiny_run, tmp_path):
    with pytest.raises(BitmcuError, match=r"--project 'zephyr' is not known; use 'ch32fun'"):
        export(tiny_run, tmp_path / "a", target="ch32v003", project="zephyr")
    with pytest.raises(BitmcuError, match="give --target ch32v003 or ch32v002"):
        export(tiny_run, tmp_path / "b", target="generic", project="ch32fun")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
