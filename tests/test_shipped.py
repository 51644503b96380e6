"""Every model under models/ keeps the figures recorded beside it in figures.json (and quoted in
its README): accuracy, weight bytes, and each firmware's cycles, flash, RAM and stack bound. The
emulator is deterministic, so the figures are pinned exactly: a change that moves one must update
it on purpose (and say why in benchmarks/RESULTS.md)."""

import json
import shutil

import pytest

from bitmcu.export import export
from bitmcu.target.emulator import measure_export
from bitmcu.target.firmware import GCC

from .conftest import ROOT, full_mnist_dir

MODELS = sorted(p.parent for p in (ROOT / "models").glob("*/figures.json"))
pytestmark = pytest.mark.skipif(shutil.which(GCC) is None, reason=f"{GCC} not installed")


def figures(model):
    return json.loads((model / "figures.json").read_text())


def test_every_shipped_model_has_its_figures():
    shipped = sorted(p.parent for p in (ROOT / "models").glob("*/checkpoint.pt"))
    assert shipped and shipped == MODELS


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_readme_quotes_the_recorded_figures(model):
    text = (model / "README.md").read_text()
    for fw in figures(model)["firmware"]:
        for key in ("cycles", "flash", "ram"):
            assert f"{fw[key]:,}" in text, f"{model.name}/README.md lacks {fw['mcu']} {key} {fw[key]:,}"


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_shipped_model_keeps_its_figures(model, tmp_path):
    fig = figures(model)
    data = full_mnist_dir()
    if "accuracy" in fig and data is None:
        pytest.skip("full MNIST not available")
    target = fig["firmware"][0]["mcu"]
    rep = export(model, tmp_path / "exp", target=target, evaluate="accuracy" in fig,
                 data_dir=str(data) if data else None)
    assert rep.weight_bytes == fig["weight_bytes"]
    if "accuracy" in fig:
        assert rep.n_test == 10000
        assert round(100 * rep.float_acc, 2) == fig["accuracy"]["float"]
        assert round(100 * rep.int_acc, 2) == fig["accuracy"]["integer"]
    for fw in fig["firmware"]:
        m = measure_export(tmp_path / "exp", fw["mcu"], n_images=fw["images"], exact=False)
        info, prof = m.fw, m.prof
        assert prof.mismatches == 0 and len(prof.inferences) == fw["images"]
        got = {"cycles": prof.median_cycles(), "flash": prof.flash["total"],
               "ram": prof.ram["total"], "stack_bound": info.stack_bound,
               "stack_peak": prof.ram["stack_peak"], "flash_kernels": info.flash_kernels or [],
               "kernels": info.hot_loops}
        want = {k: fw[k] for k in got}
        assert got == want, f"{model.name} on the {fw['mcu']}"
