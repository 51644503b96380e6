import json
import subprocess
import sys

import pytest
import torch

from bitmcu.errors import BitmcuError
from bitmcu.export import export
from bitmcu.verify import verify


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
    torch.save(blob, tmp_path / "x.pt")
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
    from bitmcu.config import load_config
    from bitmcu.train import train

    from .conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(**{"model.bias_unit": "true", "train.epochs": 2,
                                              "model.hidden": "[20, 12]"}))
    run = train(cfg, run_dir=tmp_path / "r", quiet=True)
    res = verify(run)
    assert res.c_acc["nomul"] == res.int_acc and abs(res.int_acc - res.float_acc) <= 0.02
    rep = export(run, tmp_path / "e")
    assert [(r["n_in"], r["n_out"]) for r in rep.layers] == [(257, 20), (21, 12), (13, 10)]


def test_report_says_how_the_device_must_frame_its_images():
    from bitmcu.config import load_config

    d = load_config(None, ["data.crop=22", "data.resize=bilinear"]).data
    assert d.input_description() == ("16x16 uint8 pixels, 0 = background: bilinear downscaling "
                                    "of the central 22x22 of the source image")


def test_in_chunks_equals_one_call():
    import numpy as np

    from bitmcu.verify import in_chunks

    x = np.arange(1234 * 3).reshape(1234, 3)
    fn = lambda a: a * 2 + 1  # noqa: E731
    assert np.array_equal(in_chunks(fn, x, "t", size=500), fn(x))
    assert in_chunks(fn, x[:0], "t").shape == (0, 3)
