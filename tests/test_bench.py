"""The benchmark script reuses a finished run only when it was made with the settings asked for."""

import importlib.util
from pathlib import Path

from bitmcu.config import load_config

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
