"""Every model under models/ keeps the figures recorded beside it in figures.json (and quoted in
its README): accuracy, weight bytes, each firmware's cycles, flash, RAM and stack bound, and a
shipped decoder's judged samples. The
emulator is deterministic, so the figures are pinned exactly: a change that moves one must update
it on purpose (and say why in benchmarks/RESULTS.md)."""

import json
import shutil

import pytest

from bitmcu.apps.pipeline import export
from bitmcu.target.emulator import measure_export
from bitmcu.target.firmware import GCC

from .conftest import ROOT, full_mnist_dir


def figures(model):
    return json.loads((model / "figures.json").read_text())


FIGURED = sorted(p.parent for p in (ROOT / "models").glob("*/figures.json"))
ORACLES = [m for m in FIGURED if figures(m).get("kind") == "oracle"]  # judges, on the host
MODELS = [m for m in FIGURED if m not in ORACLES]  # the models that go onto a chip
needs_gcc = pytest.mark.skipif(shutil.which(GCC) is None, reason=f"{GCC} not installed")


def test_every_shipped_model_has_its_figures():
    shipped = sorted(p.parent for p in (ROOT / "models").glob("*/checkpoint.pt"))
    assert shipped and shipped == FIGURED
    assert {m.name for m in ORACLES} >= {"oracle-dice", "oracle-dice-b"}


@pytest.mark.parametrize("model", ORACLES, ids=lambda p: p.name)
def test_shipped_oracle_keeps_its_figures(model):
    """An oracle's accuracy on the real test images of its data set, plain and (dice) as the
    die's display shows them, as recorded and as its README quotes."""
    import torch

    from bitmcu.apps.judge import display_images
    from bitmcu.train import evaluate, load_checkpoint, load_data, model_from_checkpoint

    fig = figures(model)
    if "test_bpc" in fig:
        pytest.skip("a judge of text: tests/test_text.py checks its bits per character")
    blob = load_checkpoint(model)
    if blob["cfg"].data.dataset != "dice":
        data_dir = full_mnist_dir()
        if data_dir is None:
            pytest.skip("full MNIST not available")
        blob["cfg"].data.data_dir = str(data_dir)
    data = load_data(blob["cfg"])
    net = model_from_checkpoint(blob)
    assert len(data.test_y) == fig["test_images"]
    assert round(100 * evaluate(net, data.test_x, data.test_y).acc, 2) == fig["test_accuracy"]
    text = (model / "README.md").read_text()
    assert f"{fig['test_accuracy']:.2f}%" in text
    if "display_accuracy" in fig:
        shown = torch.from_numpy(display_images(data.test_x.numpy()))
        assert round(100 * evaluate(net, shown, data.test_y).acc, 2) == fig["display_accuracy"]
        assert f"{fig['display_accuracy']:.2f}%" in text


JUDGED = [m for m in MODELS if "judged" in figures(m)]  # generative models judged as shipped


@pytest.mark.parametrize("model", JUDGED, ids=lambda p: p.name)
def test_shipped_decoder_keeps_its_judged_figures(model):
    """A shipped decoder's first samples per class (seeds 1.., the integer engine, its own
    temperature), judged as `bitmcu judge` does: each judge's reading and the strict figure per
    class, plain and as the die's display shows them, the ghost share, the Frechet distance, the
    spread and the nearest training image, as recorded (benchmarks/RESULTS.md has the full
    1,000-per-class figures). A change of the model, the sampler or a judge moves them."""
    from bitmcu.apps.judge import judge

    want = figures(model)["judged"]
    got = judge(model, per_class=want["per_class"], engines=[want["engine"]], seed=want["seed"])
    e = got.engines[0]
    judges = {k.rsplit("/", 1)[-1]: [round(x, 4) for x in v] for k, v in e.judges.items()}
    assert judges == want["judges"]
    assert [round(x, 4) for x in e.strict] == want["strict"]
    assert [round(x, 4) for x in e.display_strict] == want["display_strict"]
    assert e.ghost == pytest.approx(want["ghost"], rel=1e-3)
    assert e.frechet == pytest.approx(want["frechet"], rel=1e-3)
    assert e.nearest_train_median == pytest.approx(want["nearest_train_median"], rel=1e-3)
    assert e.pairwise == pytest.approx(want["pairwise"], rel=1e-3)


@needs_gcc
@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_readme_quotes_the_recorded_figures(model):
    text = (model / "README.md").read_text()
    for fw in figures(model)["firmware"]:
        for key in ("cycles", "flash", "ram"):
            assert f"{fw[key]:,}" in text, f"{model.name}/README.md lacks {fw['mcu']} {key} {fw[key]:,}"


@needs_gcc
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
