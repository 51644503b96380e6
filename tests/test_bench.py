"""The benchmark scripts: run reuse, image counts, ensembles."""

import importlib.util
from pathlib import Path

from bitmcu.train.config import load_config

spec = importlib.util.spec_from_file_location(
    "bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_config_changes_names_what_differs_and_ignores_how_a_run_ran():
    base = load_config("reference", ["train.threads=1"]).to_dict()
    same = load_config("reference", ["train.threads=2", "train.device=cpu"]).to_dict()
    assert bench.config_changes(base, same) == []
    other = load_config("reference", ["augment.until=120", "seed=3"]).to_dict()
    assert bench.config_changes(base, other) == [
        "augment.until: 135 in the run, 120 asked", "seed: 0 in the run, 3 asked"]


def test_on_chip_embeds_fewer_test_images_when_they_overflow_the_flash():
    from types import SimpleNamespace

    from bitmcu.core.errors import BitmcuError

    tried = []

    def build(export_dir, mcu, n_images):
        tried.append(n_images)
        if n_images > 2:
            raise BitmcuError(f"firmware does not fit the {mcu}: flash overflowed by 148 bytes")
        return SimpleNamespace(elf="fw.elf", hot_loops="flash" if n_images == 2 else "sram")

    def profile(elf):
        return SimpleNamespace(median_cycles=lambda: 1000, flash={"total": 16000},
                               ram={"total": 3000, "stack_peak": 400}, mismatches=0,
                               segment_medians=lambda: {})

    r = bench._on_chip(Path("x"), "ch32v002", build, profile)
    assert tried == [4, 2] and r["images"] == 2
    assert bench._fmt_chip(r) == "1,000 / 16,000 / 3,000 (2 images, kernels in flash)"

    def ram_overflow(export_dir, mcu, n_images):  # fewer images do not help: one try
        tried.append(n_images)
        raise BitmcuError("firmware does not fit the ch32v003: RAM overflowed by 192 bytes")

    tried.clear()
    r = bench._on_chip(Path("x"), "ch32v003", ram_overflow, profile)
    assert tried == [4] and bench._fmt_chip(r).startswith("firmware does not fit")


def test_ensemble_of_a_run_with_itself_is_that_run(tiny_run):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ensemble.py"
    r = subprocess.run([sys.executable, str(script), str(tiny_run), str(tiny_run)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, second, overlap = r.stdout.strip().splitlines()
    alone = first.split(": ")[1].split("%")[0]
    assert first.endswith(f"ensemble of the first 1: {alone}%")
    assert second.endswith(f"ensemble of the first 2: {alone}%")
    every, half, anyone = (int(s.split(": ")[-1]) for s in overlap.split(", "))
    assert every == half == anyone > 0  # the same images, all of them wrong twice
