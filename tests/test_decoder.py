"""Decoders: training, the one PRNG and latent sampler, bit-exact generation by the numpy
reference, the host C engine and the emulated firmware, and their errors."""

import numpy as np
import pytest

from bitmcu.cli import main
from bitmcu.core import rng
from bitmcu.core.errors import BitmcuError
from bitmcu.deploy import reference
from bitmcu.deploy.codegen import model_header
from bitmcu.deploy.hostc import HostModel
from bitmcu.deploy.ir import IntModel
from bitmcu.train.config import load_config

from .conftest import tiny_overrides

TINY = ["data.dataset=dice", "data.size=16", "data.dice.train=600", "data.dice.test=100",
        "model.family=decoder", "model.latent=6", "model.hidden=[16]", "model.channels=4",
        "model.start=4", "model.conv=[up*4, up*1]", "train.epochs=2", "train.batch_size=32",
        "train.threads=1", "augment.enabled=false",
        "model.layer_schemes=[ternary, 2bitsym, 8bit, binary]"]


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    from bitmcu.train import train

    out = tmp_path_factory.mktemp("runs") / "dec"
    return train(load_config(None, TINY), run_dir=out, quiet=True)


@pytest.fixture(scope="module")
def tiny_export(tiny_decoder, tmp_path_factory):
    from bitmcu.apps.pipeline import export

    out = tmp_path_factory.mktemp("exp") / "dec"
    export(tiny_decoder, out, target="ch32v003")
    return out


def test_latent_sampler_statistics():
    """Many seeds: mean 0 and the standard deviation training assumed (32 latent units)."""
    k = rng.latent_scale(1.0)
    z = rng.latents_for(np.arange(20000), 16, k).astype(np.float64)
    assert abs(z.mean()) < 0.3
    exact = np.sqrt(rng.BYTE_SUM_VAR) * k / 256  # the definition's standard deviation
    assert abs(z.std() - exact) < 0.01 * exact
    assert abs(exact / 32 - 1) < 0.01  # N(0, 1) in latent units, within 1%
    assert rng.latent_scale(0.5) < k < rng.latent_scale(1.5)


def test_uniform_prior_sampler():
    """The uniform prior's word (rng.UNIFORM with the multiplier): one centred byte per value,
    uniform over +-sqrt(3) latent units of 32 at temperature 1 (variance 1), mean 0; every
    one of the 256 bytes equally often; the same PRNG words as the normal prior's."""
    k = rng.latent_scale(1.0, "uniform")
    assert k & rng.UNIFORM and k & 255 == 56
    z = rng.latents_for(np.arange(20000), 16, k).astype(np.float64)
    assert abs(z.mean()) < 0.3 and abs(z.std() / 32 - 1) < 0.02
    assert z.min() == -56 and z.max() == 56  # (2 * 0 - 255) * 56 / 256 .. (2 * 255 - 255) ...
    assert abs(np.abs(z).max() / 32 - np.sqrt(3)) < 0.02
    counts = np.unique(z, return_counts=True)[1]
    assert counts.max() < 1.5 * counts.mean()  # no value much likelier than another
    _, after_u = rng.sample_latent(rng.seed_state([7]), 4, k)
    _, after_n = rng.sample_latent(rng.seed_state([7]), 4, rng.latent_scale(1.0))
    assert after_u == after_n  # one PRNG word per value either way
    assert rng.describe_scale(k) == "scale 56, uniform prior"


def test_uniform_prior_decoder_in_c_equals_the_reference(tmp_path):
    """A decoder with model.prior uniform (trained on the renderer's factors, each image
    weighted by its lit area): model.h carries the flag, and the C engine's sampler and pixels
    equal the reference's."""
    from bitmcu.train import train
    from bitmcu.train.lower import load_int_model

    run = train(load_config(None, [*TINY, "train.objective=factors", "model.prior=uniform",
                                   "train.pixel_weight=area", "train.epochs=1"]),
                run_dir=tmp_path / "u", quiet=True)
    model, _ = load_int_model(run)
    assert model.latent_scale & rng.UNIFORM
    assert "(BITMCU_LATENT_UNIFORM | " in model_header(model, "test")
    assert_c_generates_the_reference(model, np.arange(200), has_mul=False)
    with pytest.raises(BitmcuError, match="model.prior.*uniform is the prior of a decoder "
                                          "trained on the renderer's factors"):
        load_config(None, [*TINY, "model.prior=uniform"])


def _mixture_tables(n_classes: int, k: int, latent: int, seed: int = 0):
    """Random mixture tables (cum, centre, sd) with one never-drawn component per class."""
    g = np.random.default_rng(seed)
    w = g.random((n_classes, k))
    w[:, 1] = 0
    w /= w.sum(1, keepdims=True)
    cum = np.minimum(np.round(np.cumsum(w, 1) * 65536), 65535).astype(np.uint16)
    cum[:, -1] = 65535
    centre = g.integers(-100, 101, (n_classes, k, latent)).astype(np.int8)
    return cum, centre, g.uniform(0, 1.5, (n_classes, k, latent)).astype(np.float32), w


def test_mixture_sampler_draws_each_component_by_its_share():
    """rng.sample_mixture: components in proportion to the thresholds (a zero share never),
    each value around its centre with the spread's standard deviation; one word for the
    component, then one per value."""
    cum, centre, sd, w = _mixture_tables(3, 4, 5)
    sd[:] = 0.5
    spread = np.round(sd * rng.latent_scale(1.0)).astype(np.uint8)
    n = 30000
    classes = np.arange(n) % 3
    z, after = rng.sample_mixture(rng.seed_state(np.arange(n)), classes, cum, centre, spread)
    _, ref_after = rng.sample_latent(rng.seed_state(np.arange(n)), 6, rng.latent_scale(1.0))
    np.testing.assert_array_equal(after, ref_after)
    for c in range(3):
        zc = z[classes == c].astype(np.float64)
        near = np.abs(zc[:, None, :] - centre[c][None].astype(np.float64)).sum(2).argmin(1)
        share = np.bincount(near, minlength=4) / len(zc)
        np.testing.assert_allclose(share, w[c], atol=0.02)
        top = int(np.argmax(w[c]))
        lone = zc[near == top] - centre[c, top]
        assert abs(lone.std() / 16 - 1) < 0.05  # sd 0.5 = 16 latent units


def test_mixture_sampler_in_c_equals_the_reference(tiny_decoder, tmp_path):
    """A decoder whose latent op holds a mixture prior: model.h carries its tables and
    BITMCU_MODEL_SAMPLE calls bitmcu_sample_mixture; the C engine's latents and pixels equal
    the reference's, with and without a multiplier, at two temperatures."""
    from dataclasses import replace

    from bitmcu.deploy.ir import Latent
    from bitmcu.train.lower import load_int_model

    model, _ = load_int_model(tiny_decoder)
    cum, centre, sd, _ = _mixture_tables(model.n_classes, 5, model.latent)
    op = Latent(model.latent, rng.latent_scale(1.0, "mixture"), model.input_size, cum, centre, sd)
    mixed = replace(model, ops=[op, *model.ops[1:]]).validate()
    assert "bitmcu_sample_mixture((state), (z), (cls), &bitmcu_model_mixture)" in \
        model_header(mixed, "test")
    seeds = np.concatenate([np.arange(300), [2**32 - 1]])
    for has_mul in (True, False):
        assert_c_generates_the_reference(mixed, seeds, has_mul)
    assert_c_generates_the_reference(mixed.with_latent_scale(rng.latent_scale(0.5, "mixture")),
                                     seeds, False)
    host = HostModel(model_header(mixed, "test"), sanitize=True)
    try:  # a class beyond the tables: refused, with no read past them (AddressSanitizer)
        with pytest.raises(BitmcuError) as e:
            host.generate([1], [model.n_classes], model.input_size, model.latent)
        assert "AddressSanitizer" not in str(e.value)
    finally:
        host.close()
    mixed.save(tmp_path / "m.npz")  # the tables travel in model.npz
    np.testing.assert_array_equal(IntModel.load(tmp_path / "m.npz").input.latents(seeds, seeds % 6),
                                  mixed.input.latents(seeds, seeds % 6))
    with pytest.raises(BitmcuError, match="mixture's tables must be"):
        replace(mixed, ops=[replace(op, cum=cum[:, ::-1].copy()), *model.ops[1:]]).validate()
    with pytest.raises(BitmcuError, match="needs its three tables"):
        replace(mixed, ops=[replace(op, sd=None), *model.ops[1:]]).validate()


def test_mixture_tables_are_checked_and_summed(tiny_decoder, tmp_path):
    """bitmcu_check_mixture: the mixture's checksum (bitmcu_mixture_sum, the one Python
    computes) covers its tables, so a changed centre is refused; a mixture whose latent or
    classes are not the decoder's, or whose components are more than its arrays hold, is
    refused before anything is read; `bitmcu firmware`'s
    read of an export refuses a model.h whose mixture is not model.npz's."""
    import re
    from dataclasses import replace

    from bitmcu.deploy.export import read_export
    from bitmcu.deploy.ir import Latent
    from bitmcu.train.lower import load_int_model

    model, _ = load_int_model(tiny_decoder)
    cum, centre, sd, _ = _mixture_tables(model.n_classes, 5, model.latent)
    op = Latent(model.latent, rng.latent_scale(1.0, "mixture"), model.input_size, cum, centre, sd)
    mixed = replace(model, ops=[op, *model.ops[1:]]).validate()
    header = model_header(mixed, "test")
    host = HostModel(header)
    try:
        status, sums = host.check()
    finally:
        host.close()
    assert status == 0 and sums[4] == sums[5] == op.tables_sum() != 0
    assert model.input.tables_sum() == 0  # the normal prior has no tables
    first = header.index("bitmcu_mixture_centre[")
    value = re.compile(r"-?\d+").search(header, header.index("{", first))
    flipped = str(-int(value.group()) or 1)
    tampered = header[:value.start()] + flipped + header[value.end():]
    with pytest.raises(BitmcuError, match="BITMCU_ERR_CHECKSUM"):
        HostModel(tampered)
    for field in (".latent = ", ".n_classes = ", ".components = "):
        at = header.index(field) + len(field)
        end = header.index(",", at)
        wrong = header[:at] + str(int(header[at:end]) + 1) + header[end:]
        with pytest.raises(BitmcuError, match="BITMCU_ERR_MODEL"):
            HostModel(wrong)
    mixed.save(tmp_path / "model.npz")
    other = replace(op, centre=np.roll(centre, 1, axis=1))
    (tmp_path / "model.h").write_text(
        model_header(replace(model, ops=[other, *model.ops[1:]]).validate(), "test"))
    with pytest.raises(BitmcuError, match="model.h and model.npz hold different models"):
        read_export(tmp_path, check=True)
    (tmp_path / "model.h").write_text(header)
    assert read_export(tmp_path, check=True).input.tables_sum() == op.tables_sum()


def test_area_weighted_pixel_loss():
    """train.pixel_weight area: an image's squared error counts by the batch's mean lit area
    over its own (0.5..3x), so that a small die weighs as much as a large one."""
    import torch

    from bitmcu.train.runner import pixel_error, pixel_loss

    target = torch.zeros(2, 4, 4)
    target[0, :2, :2] = 255  # 4 lit pixels
    target[1] = 255  # 16 lit pixels: mean 10
    recon = torch.zeros(2, 4, 4)
    plain = load_config(None, TINY)
    area = load_config(None, [*TINY, "train.pixel_weight=area"])
    assert pixel_loss(plain, recon, target)[0] == pixel_error(recon, target) == (4 + 16) / 2
    # weights 10 / 4 = 2.5 and 10 / 16 = 0.625; the error beside it unweighted
    loss, err = pixel_loss(area, recon, target)
    assert loss.item() == pytest.approx((4 * 2.5 + 16 * 0.625) / 2) and err == (4 + 16) / 2


def test_ghost_penalty_sees_smudges_in_empty_places_only():
    """train.ghost_weight: a pixel lit where the target is dark all round costs its squared
    excess over GHOST_LEVEL times the weight, beside the plain error; one at a part's fringe, a
    faint one, and the target itself cost nothing more. A negative weight is refused."""
    import torch

    from bitmcu.train.runner import GHOST_LEVEL, pixel_error, pixel_loss

    target = torch.zeros(4, 16, 16)
    target[:, 4:8, 4:8] = 255  # one part
    recon = target.clone()
    recon[0, 12, 12] = 150  # a smudge far from the part: a ghost
    recon[1, 8, 8] = 150  # beside the part (1 px from it): its fringe
    recon[3, 9, 5] = 150  # 2 px from it: a ghost
    recon[2, 12, 12] = GHOST_LEVEL  # far, but not lit
    cfg = load_config(None, [*TINY, "train.ghost_weight=10"])
    loss, err = pixel_loss(cfg, recon, target)
    ghost = ((150 - GHOST_LEVEL) / 255) ** 2
    assert err == pixel_error(recon, target)
    assert loss.item() == pytest.approx(err.item() + 10 * 2 * ghost / 4)
    assert pixel_loss(cfg, target, target)[0] == 0
    assert load_config(None, TINY).train.ghost_weight == 0  # off unless asked for
    # linear: the plain excess, so a faint ghost costs more than its square
    lin = load_config(None, [*TINY, "train.ghost_weight=10", "train.ghost_loss=linear"])
    assert pixel_loss(lin, recon, target)[0].item() == pytest.approx(
        err.item() + 10 * 2 * ((150 - GHOST_LEVEL) / 255) / 4)


def test_dim_penalty_sees_parts_drawn_too_faint_only():
    """train.dim_weight: a pixel under DIM_LEVEL where the target is bright (>= DIM_BRIGHT)
    costs its squared shortfall times the weight, beside the plain error; a dark target pixel,
    a bright enough pixel and the target itself cost nothing more. Negative is refused."""
    import torch

    from bitmcu.train.runner import DIM_LEVEL, pixel_error, pixel_loss

    target = torch.zeros(2, 8, 8)
    target[:, 2:5, 2:5] = 200  # a pip
    recon = target.clone()
    recon[0, 3, 3] = 90  # its middle drawn too faint
    recon[0, 2, 2] = DIM_LEVEL  # bright enough
    recon[1, 6, 6] = 90  # where the target is dark: the plain error only
    cfg = load_config(None, [*TINY, "train.dim_weight=4"])
    loss, err = pixel_loss(cfg, recon, target)
    assert err == pixel_error(recon, target)
    assert loss.item() == pytest.approx(err.item() + 4 * ((DIM_LEVEL - 90) / 255) ** 2 / 2)
    assert pixel_loss(cfg, target, target)[0] == 0
    assert load_config(None, TINY).train.dim_weight == 0
    with pytest.raises(BitmcuError, match="train.dim_weight"):
        load_config(None, [*TINY, "train.dim_weight=-1"])
    with pytest.raises(BitmcuError, match=r"'train.ghost_weight': -1.0 must be >= 0"):
        load_config(None, [*TINY, "train.ghost_weight=-1"])


def test_factor_range_trains_on_the_middle_of_each_factor():
    """train.factor_range: every training latent outside the middle share of each factor's range
    is replaced, with its clean target, by one of the same class inside it; the latents inside
    stay where they were. A share that leaves a class nothing, a share outside (0, 1] and one
    on a decoder that does not train on the renderer's factors are refused."""
    import math

    import torch

    from bitmcu.train.runner import within_range

    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(600, 4, generator=gen) * 2 - 1) * math.sqrt(3)
    y = torch.arange(600) % 3
    t = torch.arange(600)[:, None, None].expand(600, 2, 2).clone()  # target i: the value i
    z2, t2 = within_range(z, t, y, 0.9)
    inside = (z.abs() <= 0.9 * math.sqrt(3)).all(1)
    assert 0 < (~inside).sum() < 300
    assert (z2.abs() <= 0.9 * math.sqrt(3)).all()
    assert torch.equal(z2[inside], z[inside]) and torch.equal(t2[inside], t[inside])
    src = t2[~inside, 0, 0]  # where each replaced image came from: inside, the same class
    assert inside[src].all() and torch.equal(y[src], y[~inside])
    assert torch.equal(z2[~inside], z[src])
    z[y == 2] = math.sqrt(3)  # class 2 all at the edge
    with pytest.raises(BitmcuError, match="'train.factor_range': 0.9 leaves no training image "
                                          "of class 2"):
        within_range(z, t, y, 0.9)
    factors = [*TINY, "train.objective=factors", "model.prior=uniform"]
    assert load_config(None, [*factors, "train.factor_range=0.9"]).train.factor_range == 0.9
    for bad in ("0", "1.5"):
        with pytest.raises(BitmcuError, match=f"'train.factor_range': {float(bad)} must be in "
                                              r"\(0, 1\]"):
            load_config(None, [*factors, f"train.factor_range={bad}"])
    with pytest.raises(BitmcuError, match="'train.factor_range': 0.9 narrows .* this run has "
                                          "train.objective 'cvae'"):
        load_config(None, [*TINY, "train.factor_range=0.9"])


def test_xorshift_known_values():
    """The standard xorshift32 (13, 17, 5) sequence from state 1; seeds 0 and XORSHIFT_ZERO
    (whose mix is 0) get nonzero states."""
    s = np.array([1], dtype=np.uint32)
    out = []
    for _ in range(3):
        s = rng.xorshift32(s)
        out.append(int(s[0]))
    assert out == [270369, 67634689, 2647435461]
    assert rng.seed_state([0, rng.XORSHIFT_ZERO]).all()


def test_float_decoder_is_the_integer_model(tiny_decoder):
    from bitmcu.apps.generate import load_decoder, sample_images

    blob, model = load_decoder(tiny_decoder)
    seeds, classes = np.arange(200), np.arange(200) % 6
    f = sample_images(blob, model, seeds, classes, "float")
    i = sample_images(blob, model, seeds, classes, "int")
    np.testing.assert_array_equal(f, i)
    assert i.shape == (200, 16, 16) and i.max() > 0


@pytest.mark.parametrize("has_mul", [True, False])
def test_c_engine_generates_the_reference_pixels(tiny_decoder, has_mul):
    from bitmcu.train.lower import load_int_model

    model, _ = load_int_model(tiny_decoder)
    seeds = np.concatenate([np.arange(300), [2**32 - 1, 123456789]])
    assert_c_generates_the_reference(model, seeds, has_mul)


def assert_c_generates_the_reference(model, seeds, has_mul: bool) -> None:
    """The host C engine draws each seed's latent and image (classes cycling) exactly as the
    numpy sampler and reference do."""
    classes = np.arange(len(seeds)) % model.n_classes
    host = HostModel(model_header(model, "test"), has_mul=has_mul)
    try:
        images, z = host.generate(seeds, classes, model.input_size, model.latent)
    finally:
        host.close()
    np.testing.assert_array_equal(z, model.input.latents(seeds, classes))
    np.testing.assert_array_equal(images, reference.generate(model, z, classes))


def test_verify_sanitized_and_cli(tiny_decoder, capsys):
    assert main(["verify", str(tiny_decoder), "--limit", "60", "--sanitize"]) == 0
    assert "equals the numpy reference" in capsys.readouterr().out


def test_export_roundtrip_and_example(tiny_export):
    import subprocess

    model = IntModel.load(tiny_export / "model.npz")
    assert model.generative and model.ops[-1].factor == 2
    assert "input: a latent of 6 int8 values (scale 55) and a class of 6; it makes a 16x16" in \
        (tiny_export / "report.txt").read_text()
    r = subprocess.run(["make", "-s"], cwd=tiny_export, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["./example"], cwd=tiny_export, capture_output=True, text=True)
    assert r.returncode == 0 and "8/8 images equal to the reference" in r.stdout


@pytest.mark.parametrize("mcu", ["ch32v003", "ch32v002"])
def test_firmware_generates_the_reference_images(tiny_export, mcu, tmp_path):
    from bitmcu.target.emulator import profile
    from bitmcu.target.firmware import build_firmware

    model = IntModel.load(tiny_export / "model.npz")
    info = build_firmware(tiny_export, mcu, tmp_path / mcu, n_images=3)
    prof = profile(info.elf)
    assert prof.mismatches == 0 and prof.generative
    seeds = np.arange(1, 4)  # the firmware's samples: seeds 1..n, classes in turn
    ref = reference.generate(model, model.input.latents(seeds, np.arange(3) % model.n_classes),
                             np.arange(3) % model.n_classes)
    for k, inf in enumerate(prof.inferences):
        np.testing.assert_array_equal(np.frombuffer(inf.pixels, np.uint8).reshape(16, 16), ref[k])
    assert prof.ram["total"] <= prof.ram["size"] and prof.flash["total"] <= prof.flash["size"]


def test_sample_grid(tiny_decoder, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(tiny_decoder), "--per-class", "3", "--engine", "c",
                 "--out", str(out)]) == 0
    assert out.is_file() and "18 samples" in capsys.readouterr().out
    assert main(["sample", str(tiny_decoder), "--temperature", "2.5", "--out", str(out)]) == 2
    assert "--temperature 2.5: must be in (0, 2]" in capsys.readouterr().err


def test_sample_npz_holds_what_the_grid_shows(tiny_decoder, tmp_path, capsys):
    from PIL import Image

    from bitmcu.apps.generate import grid

    args = ["sample", str(tiny_decoder), "--per-class", "3", "--seed", "40", "--temperature", "0.8"]
    assert main([*args, "--out", str(tmp_path / "s.npz")]) == 0
    assert main([*args, "--out", str(tmp_path / "s.png"), "--engine", "c"]) == 0
    with np.load(tmp_path / "s.npz") as z:
        images, classes, seeds = z["images"], z["classes"], z["seeds"]
        assert images.dtype == np.uint8 and images.shape == (18, 16, 16)
        assert list(classes) == [c for c in range(6) for _ in range(3)]
        assert list(seeds) == list(range(40, 58))
        assert float(z["temperature"]) == 0.8 and str(z["engine"]) == "int"
        assert int(z["latent_scale"]) == rng.latent_scale(0.8)
    png = np.asarray(Image.open(tmp_path / "s.png").convert("L"))[::4, ::4]
    np.testing.assert_array_equal(png, grid(images, 6))  # the C engine's grid: the same pixels
    assert "18 samples" in capsys.readouterr().out
    # an .npz takes more samples per class than a grid's row holds
    assert main(["sample", str(tiny_decoder), "--per-class", "1001", "--engine", "float",
                 "--out", str(tmp_path / "big.npz")]) == 0
    with np.load(tmp_path / "big.npz") as z:
        assert z["images"].shape == (6006, 16, 16) and np.bincount(z["classes"]).tolist() == [1001] * 6


def test_samples_of_a_grid_differ_and_classes_are_bounded(tiny_decoder):
    from bitmcu.apps.generate import load_decoder, sample_images

    blob, model = load_decoder(tiny_decoder)
    seeds = np.arange(1, 13)
    images = sample_images(blob, model, seeds, np.zeros(12, int))
    assert len({im.tobytes() for im in images}) > 6  # a row of one class: other seeds, others
    again = sample_images(blob, model, seeds, np.zeros(12, int))
    np.testing.assert_array_equal(images, again)  # the same seeds: the same images
    with pytest.raises(BitmcuError, match="classes must be 0..5"):
        sample_images(blob, model, [1], [model.n_classes])
    with pytest.raises(BitmcuError, match="classes must be 0..5"):
        sample_images(blob, model, [1], [-1])


@pytest.mark.parametrize("args, words", [
    (["--per-class", "100000000"], "--per-class 100000000: must be 1..1,000 for a PNG grid, a "
                                   "row per class (an .npz takes up to 10,000)"),
    (["--per-class", "10001", "--out", "s.npz"], "--per-class 10001: must be 1..10,000 for an "
                                                 ".npz"),
    (["--seed", "-1"], "--seed -1: give a whole number 0..4,294,967,295"),
    (["--seed", "4294967295"], "--seed 4294967295: the seeds 4294967295..4294967300 must lie"),
    (["--out", "s.txt"], "--out s.txt: give a file name ending in .png (a grid, a row per class) "
                         "or .npz (the raw samples)"),
    (["--out", "no/such/folder/s.png"], "the folder no/such/folder does not exist"),
])
def test_sample_refuses_in_one_line(tiny_decoder, args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", str(tiny_decoder), "--per-class", "1", *args]
    if "--out" not in args:
        argv += ["--out", "grid.png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # nothing written, under any name


@pytest.mark.parametrize("sets, msg", [
    (["model.latent=0"], "model.latent"),
    (["model.conv=[up*4, up*4]"], "model.conv"),
    (["model.conv=[up*4, up*4, up*1]"], "model.conv"),
    (["model.conv=[down*2]"], r"model.conv\[0\]"),
    (["model.conv=[]"], "at least one stage"),
    (["model.output=sigmoid"], "model.output"),
    (["model.layer_schemes=[none]"], "float"),
])
def test_bad_decoder_configs(sets, msg):
    with pytest.raises(BitmcuError, match=msg):
        cfg = load_config(None, TINY + sets)
        from bitmcu.train.models import build_model

        build_model(cfg, 6)


def test_classifier_commands_refuse_decoders_and_back(tiny_decoder, tiny_run, capsys):
    assert main(["eval", str(tiny_decoder)]) == 2
    assert "decoder" in capsys.readouterr().err
    assert main(["sample", str(tiny_run), "--out", "/tmp/x.png"]) == 2
    assert "classifier" in capsys.readouterr().err


def test_a_truncated_model_npz_is_one_line(tiny_export, tmp_path, capsys):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    raw = (exp / "model.npz").read_bytes()
    (exp / "model.npz").write_bytes(raw[: len(raw) // 2])
    for argv in (["firmware", str(exp), "--mcu", "ch32v003"], ["die", str(exp)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "model.npz: not a readable bitmcu integer model" in err
        assert "re-run `bitmcu export`" in err


def test_check_refuses_a_stage_input_beyond_the_largest_input(tiny_export):
    """bitmcu_check itself (not only bitmcu_generate) refuses a decoder table whose 3x3 stage
    window (9 x its input channels) exceeds the table's largest input, and nothing else in
    it is wrong."""
    import re

    model = IntModel.load(tiny_export / "model.npz")
    header = model_header(model, "test")
    stage_in = 9 * max(st.c_in for st in model.find("stage"))
    others = max(2 * model.latent + model.n_classes, *(L.n_out for L in model.find("fc")[:-1]))
    assert others < stage_in - 1  # a max_in that only the stage's window exceeds
    ok = HostModel(header)
    try:
        assert ok.check()[0] == 0
    finally:
        ok.close()
    small = re.sub(r"#define BITMCU_MODEL_MAX_IN \d+", f"#define BITMCU_MODEL_MAX_IN {stage_in - 1}",
                   header)
    assert small != header
    # BITMCU_ERR_LAYER, found before the checksums (which differ too) are compared
    with pytest.raises(BitmcuError, match="table check says BITMCU_ERR_LAYER"):
        HostModel(small)


def test_damaged_decoder_model_is_refused(tiny_export, tmp_path):
    model = IntModel.load(tiny_export / "model.npz")
    model.find("stage")[0].shift = 40
    with pytest.raises(BitmcuError, match="shift"):
        model.validate()
    model.find("stage")[0].shift = 3
    model.find("fc")[-1].bias = None
    with pytest.raises(BitmcuError, match="int8 biases"):
        model.validate()


def test_tiny_overrides_still_classify():
    assert load_config(None, tiny_overrides()).model.family == "fc"


def test_requant_gradient_stops_at_both_ends_of_the_clamp():
    """Hidden layers: gradient only where 0 < output < 255 (through the top of the clamp it let
    weights grow into saturation); the output layer (through) passes it everywhere."""
    import torch

    from bitmcu.train.models import _RequantBias

    acc = torch.tensor([[-64.0, 64.0, 1e6]], requires_grad=True)
    bias = torch.zeros(1, 3)
    for through, want in ((False, [0.0, 1 / 4, 0.0]), (True, [1 / 4] * 3)):
        acc.grad = None
        out = _RequantBias.apply(acc, bias, 2, 255, through)
        assert out.tolist() == [[0.0, 16.0, 255.0]]
        out.sum().backward()
        assert acc.grad.tolist() == [want]


def test_decoders_calibrate_at_the_first_epoch_only():
    assert load_config(None, TINY).clip_epochs() == 1
    assert load_config(None, [*TINY, "model.clip_until=3"]).clip_epochs() == 3
    assert load_config(None, []).clip_epochs() == 20


def test_factor_objective_learns_the_renderer_latent(tmp_path):
    import torch

    from bitmcu.train import train
    from bitmcu.train.runner import evaluate_decoder, load_data, load_factors

    sets = [*TINY, "train.objective=factors", "data.dice.train=3000", "train.epochs=4",
            "model.layer_schemes=[8bit, 8bit, 8bit, 8bit]", "train.lr=0.01"]
    cfg = load_config(None, sets)
    run = train(cfg, run_dir=tmp_path / "f", quiet=True)
    from bitmcu.train import load_checkpoint, model_from_checkpoint

    blob = load_checkpoint(run)
    assert "test_kl" not in blob["metrics"][-1]  # the latent is given, not inferred
    model = model_from_checkpoint(blob)
    assert model.encoder is None
    data = load_data(cfg)
    factors = load_factors(cfg, data)
    assert factors["train_z"].shape == (3000, 6) and factors["test_t"].shape == (100, 16, 16)
    err = evaluate_decoder(model, cfg, data.test_x, data.test_y, factors=factors)["test_mse"]
    # the decoder draws the die its latent describes: other dice's latents fit worse
    wrong = dict(factors, test_z=factors["test_z"].roll(1, 0))
    worse = evaluate_decoder(model, cfg, data.test_x, data.test_y, factors=wrong)["test_mse"]
    assert err < 0.8 * worse, (err, worse)
    assert torch.isfinite(torch.tensor(err))


def test_fuzzed_decoder_tables_never_crash_the_engine(tiny_decoder):
    from bitmcu.train.lower import load_int_model

    from .test_engine import _fuzz_both_ways

    full, bare = _fuzz_both_ways(load_int_model(tiny_decoder)[0])
    assert full.ran > 0 and bare.ran > full.ran


def test_fuzzed_mixture_tables_never_crash_the_sampler(tiny_decoder):
    """A decoder with a mixture prior: its mixture's counts, tables and sum are mutated beside
    the layer table; what bitmcu_check and bitmcu_check_mixture pass samples every class
    without a sanitizer report, and with the checksums draws what the unmutated model draws."""
    from dataclasses import replace

    from bitmcu.deploy.ir import Latent
    from bitmcu.train.lower import load_int_model

    from .test_engine import _fuzz_both_ways

    model, _ = load_int_model(tiny_decoder)
    cum, centre, sd, _ = _mixture_tables(model.n_classes, 3, model.latent)
    op = Latent(model.latent, rng.latent_scale(1.0, "mixture"), model.input_size, cum, centre, sd)
    full, bare = _fuzz_both_ways(replace(model, ops=[op, *model.ops[1:]]).validate(), 2000)
    assert full.ran > 0 and bare.ran > full.ran


def test_compare_c_names_the_first_sample_that_differs(tiny_export, monkeypatch):
    """One comparison for both kinds: a decoder's C images against the reference's, named by
    (seed, class); a table whose stage shifts by one more differs and is caught."""
    import dataclasses

    from bitmcu.deploy import verify

    model = IntModel.load(tiny_export / "model.npz")
    batch = verify.sample_inputs(model, 12)
    ref, outs = verify.compare_c(model, batch, builds=(False,))
    assert ref.shape == (12, model.input_size, model.input_size)
    np.testing.assert_array_equal(outs["nomul"], ref)
    i = len(model.ops) - 1
    other = dataclasses.replace(model, ops=[*model.ops[:i], dataclasses.replace(
        model.ops[i], shift=model.ops[i].shift + 1)])
    monkeypatch.setattr(verify, "model_header", lambda m, cmd: model_header(other, cmd))
    with pytest.raises(BitmcuError, match=r"C engine \(nomul\) differs from the reference on "
                                          r"\d+ of 12 samples .*first: seed \d+, class \d"):
        verify.compare_c(model, batch, builds=(False,))


def test_wide_fc_layers_run_in_chunks_through_a_scratch(tmp_path):
    """A decoder's fc layer with more outputs than a chunk is computed CHUNK_ROWS at a time into
    bytes (a scratch over the rings, dead before they are written), so the accumulators never
    hold more than a chunk: a 64-output first layer needs 32 accumulators, not 64. The die's
    last fc layer (256 outputs) writes its first map chunk by chunk the same way. C ==
    reference, with the sanitizers, with and without multiplier."""
    from bitmcu.deploy import verify
    from bitmcu.deploy.codegen import table_rows
    from bitmcu.deploy.ops import CHUNK_ROWS
    from bitmcu.deploy.plan import plan
    from bitmcu.train import train
    from bitmcu.train.lower import load_int_model

    from .conftest import ROOT

    run = train(load_config(None, [*TINY, "model.hidden=[64]", "model.layer_schemes=[]",
                                   "train.epochs=1"]), run_dir=tmp_path / "wide", quiet=True)
    model, _ = load_int_model(run)
    rows = [r for _, r in table_rows(model)]
    assert rows[0].op == "fc" and rows[0].n_out > CHUNK_ROWS and rows[0].mult == CHUNK_ROWS
    p = plan(model)
    assert model.max_out == CHUNK_ROWS and rows[0].buf >= p.nz_at + 2 * model.max_in
    assert rows[0].buf == rows[1].buf  # the scratch lies over the first map's rows
    verify.compare_c(model, verify.sample_inputs(model, 40), sanitize=True)  # raises on any difference

    die, _ = load_int_model(ROOT / "models" / "die-ch32v003")
    rows = [r for _, r in table_rows(die)]
    fcs = [r for r in rows if r.op == "fc"]
    assert rows[len(fcs)].op == "stage" and len(fcs) >= 2
    assert all(r.n_out <= CHUNK_ROWS and r.mult == 0 for r in fcs[:-1])  # narrow: no chunks
    wide = fcs[-1]
    assert wide.n_out > CHUNK_ROWS and wide.mult == CHUNK_ROWS
    # its first map lies after the nonzero lists, which it must not overwrite
    assert die.max_out == CHUNK_ROWS and wide.buf >= plan(die).nz_at + 2 * die.max_in
    verify.compare_c(die, verify.sample_inputs(die, 40), sanitize=True)  # raises on any difference


def test_a_stage_window_wider_than_255_inputs_takes_filler_entries(tmp_path):
    """A stage's 3x3 window over 32 channels spans 288 inputs: where two nonzero inputs lie more
    than 255 apart, its nonzero list takes filler entries (step 255, value 0). The first map's
    channels 1..30 are made zero and channels 0 and 31 lit, so in every window the step from
    channel 0 to channel 31 is over 255. C == reference, with the sanitizers, with and without
    multiplier."""
    from bitmcu.deploy import verify
    from bitmcu.quant import get_scheme
    from bitmcu.train import train
    from bitmcu.train.lower import load_int_model

    run = train(load_config(None, [*TINY, "model.channels=32", "model.layer_schemes=[]",
                                   "train.epochs=1"]), run_dir=tmp_path / "wide", quiet=True)
    model, _ = load_int_model(run)
    fc, stage = model.find("fc")[-1], model.find("stage")[0]
    assert stage.c_in == 32 and fc.n_out == 32 * stage.side ** 2
    scheme = get_scheme(fc.scheme)
    w = scheme.unpack(fc.weights, fc.n_out, fc.n_in)
    per = stage.side ** 2  # the first map is channel-major: output c * per + pixel
    dark = slice(per, 31 * per)
    w[:] = max(scheme.levels)  # the inputs are >= 0: channels 0 and 31 light up
    w[dark] = min(scheme.levels)  # ... and 1..30 stay dark
    fc.weights = scheme.pack(w)
    fc.bias = np.full(fc.n_out, 127, dtype=np.int8)
    fc.bias[dark] = -128
    batch = verify.sample_inputs(model, 12)
    verify.compare_c(model, batch, sanitize=True)  # raises on any difference
    latent = model.find("latent")[0]
    z = rng.latents_for(batch[:, 0], latent.size, latent.scale)
    first = reference.forward(model, (z, batch[:, 1]), upto=model.ops.index(fc) + 1)
    lit = first.reshape(len(batch), 32, per).any(axis=2)
    assert lit[:, [0, 31]].all() and not lit[:, 1:31].any()


def test_the_band_lies_in_the_accumulators_after_the_last_stages():
    """A decoder's band (the last stage's output rows, handed over at once) needs no RAM of its
    own where it fits in the accumulators after the last stage's: they are written a pixel at a
    time and the band after them, and it is handed over before another layer runs. The die's
    plan puts it there; the C engine's table check refuses a band over the last stage's
    accumulators or past them into the nonzero list."""
    from bitmcu.deploy.codegen import model_header, table_rows
    from bitmcu.deploy.hostc import HostModel
    from bitmcu.deploy.plan import _r4, plan
    from bitmcu.train.lower import load_int_model

    from .conftest import ROOT

    die, _ = load_int_model(ROOT / "models" / "die-ch32v003")
    last = [r for _, r in table_rows(die)][-1]
    p = plan(die)
    factor, side = last.relu, last.mult  # a stage's row: its factor and input side there
    band = factor * factor * side  # two rows of 2 * side pixels
    assert last.op == "stage" and factor == 2 and last.buf == 4 * last.n_out
    assert last.buf + band <= p.nz_at
    # the arena ends with the rings: nothing after them for the band
    assert p.bytes == max(_r4(b + n) for b, n in zip(p.bufs[:-1], p.sizes[:-1], strict=True))
    header = model_header(die, "test")
    field = f".buf = {last.buf}, .nbytes"
    assert header.count(field) == 1
    for buf, status in ((last.buf, 0), (last.buf - 4, 6), (p.nz_at - band + 4, 6)):
        host = HostModel(header.replace(field, f".buf = {buf}, .nbytes"), check=False)
        try:
            assert host.check()[0] == status, buf  # 6: BITMCU_ERR_MODEL
        finally:
            host.close()


def test_a_decoder_exports_without_its_training_data(tiny_decoder, tmp_path, monkeypatch):
    """A decoder has no test images: exporting it neither loads nor renders its data set (a
    classifier's export needs its test images and still loads them)."""
    from bitmcu.apps import pipeline

    def no_data(cfg):
        raise AssertionError("export loaded the data set")

    monkeypatch.setattr(pipeline, "load_data", no_data)
    pipeline.export(tiny_decoder, tmp_path / "e", target="ch32v003")
    assert (tmp_path / "e" / "test_samples.h").is_file()
    assert not (tmp_path / "e" / "test_set.npz").exists()


def test_class_mmd_compares_each_class_with_the_prior():
    import torch

    from bitmcu.train.runner import class_mmd

    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(400)
    prior_like = torch.randn(800, 4, generator=g)
    shifted = prior_like + torch.tensor([1.5, 0, 0, 0])
    assert abs(class_mmd(prior_like, y, g)) < 0.02
    assert class_mmd(shifted, y, g) > 0.2
    # pooled over both classes these latents are the prior exactly, but each class holds one
    # half of it: the sampler draws every class from the whole prior, so this must count
    halves = prior_like.clone()
    halves[:, 0] = halves[:, 0].abs() * torch.where(y == 0, 1.0, -1.0)
    assert class_mmd(halves, y, g) > 0.1
    assert abs(class_mmd(halves, torch.zeros_like(y), g)) < 0.02
    # a class seen once has no within-class pairs: it is left out, not divided by zero
    assert class_mmd(shifted[:5], torch.arange(5), g) == 0
    # its gradient pulls the latents toward the prior (a sample's share of it is 1 / batch)
    z = shifted.clone().requires_grad_(True)
    class_mmd(z, y, torch.Generator().manual_seed(1)).backward()
    with torch.no_grad():
        moved = z - 0.5 * len(z) * z.grad
    assert class_mmd(moved, y, g) < 0.5 * class_mmd(shifted, y, g)


def _bars_npz(path, n: int = 1600, seed: int = 0):
    """A user's own images: 16x16 bars, class 0 horizontal, class 1 vertical, 2 pixels wide
    anywhere from row (column) 2 to 12."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.zeros((n, 16, 16), np.uint8)
    for i, (c, at) in enumerate(zip(y, rng.integers(2, 13, n), strict=True)):
        if c == 0:
            x[i, at : at + 2, 1:15] = 255
        else:
            x[i, 1:15, at : at + 2] = 255
    k = n * 7 // 8
    np.savez(path, x_train=x[:k], y_train=y[:k], x_test=x[k:], y_test=y[k:])
    return path


def test_wae_objective_learns_a_users_images_from_an_npz(tmp_path):
    import torch

    from bitmcu.apps.generate import load_decoder, sample_images
    from bitmcu.train import load_checkpoint, model_from_checkpoint, train

    sets = ["model.family=decoder", f"data.dataset={_bars_npz(tmp_path / 'bars.npz')}",
            "data.size=16", "augment.enabled=false", "model.latent=2", "model.hidden=[32]",
            "model.channels=4", "model.start=4", "model.conv=[up*4, up*1]", "model.scheme=8bit",
            "train.objective=wae", "train.epochs=8", "train.batch_size=32", "train.lr=0.01",
            "train.threads=1", "model.temperature=1.0"]
    run = train(load_config(None, sets), run_dir=tmp_path / "w", quiet=True)
    blob = load_checkpoint(run)
    first, last = blob["metrics"][0], blob["metrics"][-1]
    assert "test_mmd" in last and "test_kl" not in last and np.isfinite(last["test_mmd"])
    assert last["test_mse"] < 0.8 * first["test_mse"]
    model = model_from_checkpoint(blob).eval()
    x = torch.randint(0, 256, (8, 16, 16)).float()
    y = torch.arange(8) % 2
    with torch.no_grad():
        a, b = model(x, y, noise=False)[0], model(x, y, noise=False)[0]
        noisy = model(x, y)[0]
    assert torch.equal(a, b)  # the latent is the encoder's mean: no draw
    assert not torch.equal(a, noisy)
    # prior samples at temperature 1, by the integer engine: each class draws its own bar,
    # at more than one place
    blob, int_model = load_decoder(run)
    classes = np.repeat([0, 1], 100)
    images = sample_images(blob, int_model, np.arange(1, 201), classes, "int").astype(float)
    rows, cols = images.mean(2).max(1), images.mean(1).max(1)
    horizontal = rows > cols
    assert horizontal[classes == 0].mean() > 0.9 and horizontal[classes == 1].mean() < 0.1
    # the bars lie at 11 places; the prior's samples cover most of them, for both classes
    assert len(set(images[classes == 0].mean(2).argmax(1))) >= 8
    assert len(set(images[classes == 1].mean(1).argmax(1))) >= 8
    with pytest.raises(BitmcuError, match="train.mmd_weight"):
        load_config(None, [*TINY, "train.objective=wae", "train.mmd_weight=-1"])


def test_a_mixture_prior_is_fitted_to_where_the_encoder_put_the_images(tmp_path):
    """model.prior mixture: after the last epoch each class's mixture is fitted to the
    encoder's means of its training images (its shares sum to 1, its mean is theirs); the
    integer model samples from it (float = integer = C), and a checkpoint without it is
    refused in one line."""
    import torch

    from bitmcu.apps.generate import load_decoder, sample_images
    from bitmcu.train import load_checkpoint, model_from_checkpoint, train
    from bitmcu.train.lower import lower
    from bitmcu.train.mixture import encoder_means

    data = _bars_npz(tmp_path / "bars.npz", n=800)
    sets = ["model.family=decoder", f"data.dataset={data}", "data.size=16",
            "augment.enabled=false", "model.latent=2", "model.hidden=[16]", "model.channels=4",
            "model.start=4", "model.conv=[up*4, up*1]", "model.scheme=8bit",
            "train.objective=wae", "train.epochs=2", "train.batch_size=32", "train.threads=1",
            "model.prior=mixture", "model.mixture=3"]
    run = train(load_config(None, sets), run_dir=tmp_path / "w", quiet=True)
    blob = load_checkpoint(run)
    mix = {k: v.numpy() for k, v in blob["mixture"].items()}
    assert mix["centre"].shape == mix["sd"].shape == (2, 3, 2) and mix["weight"].shape == (2, 3)
    np.testing.assert_allclose(mix["weight"].sum(1), 1)
    with np.load(data) as d:
        x, y = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"]).long()
    mu = encoder_means(model_from_checkpoint(blob), x, y)
    for c in range(2):
        np.testing.assert_allclose((mix["weight"][c, :, None] * mix["centre"][c]).sum(0),
                                   mu[y.numpy() == c].mean(0), atol=1e-6)
    blob, model = load_decoder(run)
    assert model.latent_scale & rng.MIXTURE
    seeds, classes = np.arange(1, 2001), np.arange(2000) % 2
    z = model.input.latents(seeds, classes) / rng.LATENT_UNIT
    for c in range(2):  # the draws' mean is the encoder's, not the N(0, 1) prior's
        np.testing.assert_allclose(z[classes == c].mean(0), mu[y.numpy() == c].mean(0),
                                   atol=0.1)
    a = sample_images(blob, model, seeds[:64], classes[:64], "float")
    np.testing.assert_array_equal(a, sample_images(blob, model, seeds[:64], classes[:64], "int"))
    np.testing.assert_array_equal(a, sample_images(blob, model, seeds[:64], classes[:64], "c",
                                                   has_mul=False))
    from bitmcu.apps.pipeline import export
    from bitmcu.target.emulator import profile
    from bitmcu.target.firmware import build_firmware

    export(run, tmp_path / "exp", target="ch32v003")  # the chip draws the same latents
    assert ("a latent of 2 int8 values (scale 55, mixture prior of 3 components per class, its "
            "tables 36 bytes of the weight bytes) and a class of 2") in \
        (tmp_path / "exp" / "report.txt").read_text()
    prof = profile(build_firmware(tmp_path / "exp", "ch32v003", tmp_path / "fw", n_images=4).elf)
    assert prof.generative and prof.mismatches == 0 and len(prof.inferences) == 4
    del blob["mixture"]
    with pytest.raises(BitmcuError, match="holds no fitted mixture"):
        lower(blob)
    with pytest.raises(BitmcuError, match="mixture is fitted to an encoder's latents"):
        load_config(None, [*TINY, "train.objective=factors", "model.prior=mixture"])
    with pytest.raises(BitmcuError, match="model.mixture.*allowed 1..255"):
        load_config(None, [*sets, "model.mixture=0"])
    few = _bars_npz(tmp_path / "few.npz", n=200)  # 175 training images: 88 and 87
    with pytest.raises(BitmcuError, match="model.mixture 100: class 1 has 87 training images"):
        train(load_config(None, [*sets, f"data.dataset={few}", "model.mixture=100"]),
              run_dir=tmp_path / "m", quiet=True)
    assert not (tmp_path / "m" / "checkpoint.pt").exists()  # refused before the first epoch


def test_the_adversarial_critic_learns_and_resumes_exactly(tmp_path):
    """train.adversarial: the critic tells real images from fakes, its loss is recorded per
    epoch, and a resumed run continues with the critic it saved (a fresh critic would train
    the decoder differently from the straight run)."""
    import torch

    from bitmcu.train import load_checkpoint, train
    from bitmcu.train.critic import Adversary

    torch.manual_seed(0)
    real = torch.zeros(32, 16, 16)
    real[:, 6:10, :] = 255.0  # a bright bar
    fake = torch.full((32, 16, 16), 64.0)  # the blur a pixel loss would settle for
    y = torch.arange(32) % 2
    adversary = Adversary(2, 2e-3, torch.device("cpu"))
    losses = [adversary.step(real, fake, y) for _ in range(60)]
    with torch.no_grad():
        assert (adversary.critic(real, y) > adversary.critic(fake, y)).all()
    assert losses[-1] < 0.5 * losses[0]

    sets = [*TINY, "train.adversarial=1", "train.schedule=constant", "train.epochs=3",
            "train.objective=wae", "model.temperature=1.0"]
    ref = train(load_config(None, sets), run_dir=tmp_path / "ref", quiet=True)
    run = train(load_config(None, [*sets, "train.epochs=2"]), run_dir=tmp_path / "run",
                quiet=True)
    train(None, resume=run, epochs=3, quiet=True)
    a, b = load_checkpoint(ref), load_checkpoint(run)
    assert all(np.isfinite(m["train_critic_loss"]) for m in a["metrics"])
    for sa, sb in ((a["model"], b["model"]), (a["critic"]["model"], b["critic"]["model"])):
        for k, v in sa.items():
            assert torch.equal(v, sb[k]), k
    with pytest.raises(BitmcuError, match="'train.adversarial': -1.0 must be >= 0"):
        load_config(None, [*TINY, "train.adversarial=-1"])
    with pytest.raises(BitmcuError, match="train.adversarial"):
        load_config(None, ["train.adversarial=1"])  # a classifier has no samples to judge
