"""The oracle and `bitmcu judge`: a float classifier of real images judging generated ones."""

import json

import numpy as np
import pytest

from bitmcu.apps.judge import frechet, judge, mean_pairwise, nearest_distances
from bitmcu.cli import main
from bitmcu.core import rng
from bitmcu.core.errors import BitmcuError
from bitmcu.train.config import load_config

from .test_decoder import TINY

ORACLE = ["name=oracle-tiny", "data.dataset=dice", "data.size=16", "data.dice.train=1200",
          "data.dice.test=300", "model.family=convnet", "model.channels=8",
          "model.conv=[conv, pool, conv, pool]", "model.hidden=[32]", "model.scheme=none",
          "train.epochs=4", "train.lr=0.003", "train.batch_size=32", "train.threads=1",
          "augment.enabled=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from bitmcu.train import train

    base = tmp_path_factory.mktemp("judge")
    oracle = train(load_config(None, ORACLE), run_dir=base / "oracle", quiet=True)
    dec = train(load_config(None, TINY), run_dir=base / "dec", quiet=True)
    return dec, oracle


@pytest.fixture(scope="module")
def oracle_b(tmp_path_factory):
    """A second tiny oracle: another seed and width."""
    from bitmcu.train import train

    sets = [*ORACLE, "name=oracle-tiny-b", "seed=1", "model.channels=12"]
    return train(load_config(None, sets), run_dir=tmp_path_factory.mktemp("judge-b") / "o",
                 quiet=True)


def test_oracle_classifies_real_dice(runs):
    """The oracle config's network, trained briefly on 1,200 rendered dice, tells the faces of
    unseen real dice apart (the figure `bitmcu judge` prints first)."""
    from bitmcu.train import evaluate, load_checkpoint, load_data, model_from_checkpoint

    blob = load_checkpoint(runs[1])
    data = load_data(blob["cfg"])
    ev = evaluate(model_from_checkpoint(blob), data.test_x, data.test_y)
    assert ev.acc >= 0.9


def test_judge_figures(runs, oracle_b, tmp_path, capsys):
    dec, oracle = runs
    out = tmp_path / "judge.json"
    assert main(["judge", str(dec), "--oracle", str(oracle), "--oracle", str(oracle_b),
                 "--per-class", "40", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for words in ("oracle accuracy", "memorization", "Frechet", "face 6", "float minus integer"):
        assert words in text
    d = json.loads(out.read_text())
    assert [e["engine"] for e in d["engines"]] == ["float", "int", "c"]
    assert d["per_class"] == 40 and len(d["classes"]) == 6
    assert d["oracle_test_accuracy"] >= 0.9
    f, i, c = d["engines"]
    # the three engines draw the same pixels, so every figure agrees
    for key in ("accuracy", "distinct", "pairwise", "nearest_train_median", "frechet"):
        assert f[key] == i[key] == c[key]
    assert all(0 <= a <= 1 for a in i["accuracy"]) and all(0 < s <= 1 for s in i["distinct"])
    assert i["frechet"] > 0 and d["real_frechet"] >= 0 and d["real_nearest_train_min"] > 0
    assert i["exact_copies"] == 0
    # several judges: both oracles and the pip counter, each with its accuracy on real dice
    assert d["judges"] == [str(oracle), str(oracle_b), "pips"]
    assert set(d["judge_test_accuracy"]) == set(d["judge_display_accuracy"]) == set(d["judges"])
    assert d["judge_test_accuracy"][str(oracle)] == d["oracle_test_accuracy"]
    for e in (f, i, c):
        assert set(e["judges"]) == set(d["judges"]) and len(e["strict"]) == 6
        for cl in range(6):  # strict: no more than the strictest judge
            assert e["strict"][cl] <= min(e["judges"][j][cl] for j in d["judges"])
            assert e["display_strict"][cl] <= min(e["display_judges"][j][cl] for j in d["judges"])
        assert e["judges"][str(oracle)] == e["accuracy"] and 0 <= e["ghost"] <= 1
        assert 0 <= e["ghost_images"] <= 240 and (e["ghost_images"] == 0) == (e["ghost"] == 0)
    assert f["strict"] == i["strict"] == c["strict"]
    assert "strict" in text and "J3 pips" in text and "ghost share" in text
    assert 0 <= d["real_ghost_images"] <= d["judge_test_images"]
    assert (d["real_ghost_images"] == 0) == (d["real_ghost"] == 0)
    assert f"in {i['ghost_images']} of 240 samples" in text


def test_strict_agreement_of_judges():
    from bitmcu.apps.judge import agreement

    classes = np.array([0, 1, 1, 2])
    per, strict = agreement({"a": np.array([0, 1, 1, 2]), "b": np.array([0, 1, 0, 1])},
                            classes, 3)
    assert per == {"a": [1.0, 1.0, 1.0], "b": [1.0, 0.5, 0.0]}
    assert strict == [1.0, 0.5, 0.0]


def test_frechet_of_known_gaussians():
    """Diagonal covariances: |mu_a - mu_b|^2 + sum (sa - sb)^2 with sa, sb the deviations."""
    r = np.random.default_rng(0)
    a = r.standard_normal((200000, 3))
    b = a * np.array([2.0, 1.0, 0.5]) + np.array([1.0, 0.0, -2.0])
    exact = 1 + 4 + (1 + 0 + 0.25)
    assert frechet(a, b) == pytest.approx(exact, rel=0.01)
    assert abs(frechet(a, a)) < 1e-6


def test_distances():
    imgs = np.zeros((3, 2, 2), np.uint8)
    imgs[1, 0, 0] = 255
    imgs[2] = 255
    assert mean_pairwise(imgs) == pytest.approx((1 + 2 + np.sqrt(3)) / 3)
    np.testing.assert_allclose(nearest_distances(imgs, imgs[:2]), [0, 0, np.sqrt(3)])


def test_engine_figures_count_duplicates_and_copies():
    """Distinct images per class with known duplicates; copies of training images (exact, and
    closer to the training set than every real test image) counted."""
    from bitmcu.apps.judge import engine_figures

    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    imgs = rng.integers(0, 256, (8, 4, 4), dtype=np.uint8)
    imgs[1] = imgs[0]  # class 0: 4 images, 2 of them the same -> 3 distinct
    imgs[2] = train_x[5]  # an exact copy of a training image
    imgs[6] = imgs[7] = imgs[5] = imgs[4]  # class 1: one image four times -> 1 distinct
    classes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    real_near = np.array([0.5, 0.7])  # no real test image is nearer the training set than 0.5
    near_copy = train_x[9].copy()
    near_copy[0, 0] ^= 1  # one pixel off a training image: 1/255 away
    imgs[3] = near_copy
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    feats = rng.normal(size=(8, 3))
    f = engine_figures("int", imgs, classes, 2, pred, feats, train_x,
                       {im.tobytes() for im in train_x}, real_near, rng.normal(size=(30, 3)))
    assert f.distinct == [0.75, 0.25]
    assert f.accuracy == [0.75, 1.0]
    assert f.exact_copies == 1 and f.copies == 2  # the exact copy and the near one
    assert f.nearest_train_min == pytest.approx(0, abs=0.01)  # float32 distances


def test_judge_errors(runs, tiny_run, tmp_path):
    dec, oracle = runs
    with pytest.raises(BitmcuError, match="train it first: bitmcu train oracle-dice"):
        judge(dec, tmp_path / "none", per_class=4)
    with pytest.raises(BitmcuError, match="trained on .*mnist.* train an oracle on the same"):
        judge(dec, tiny_run, per_class=4)
    with pytest.raises(BitmcuError, match="classifier .* needs a decoder"):
        judge(tiny_run, oracle, per_class=4)
    with pytest.raises(BitmcuError, match="the oracle is a classifier"):
        judge(dec, dec, per_class=4)
    with pytest.raises(BitmcuError, match="--per-class 1: must be 2..10,000"):
        judge(dec, oracle, per_class=1)
    with pytest.raises(BitmcuError, match="--per-class 10001: must be 2..10,000"):
        judge(dec, oracle, per_class=10001)
    with pytest.raises(BitmcuError, match=r"--seed 4294967290: the seeds 4294967290..4294967313 "
                                          r"must lie in 0..4,294,967,295"):
        judge(dec, oracle, per_class=4, seed=2**32 - 6)
    with pytest.raises(BitmcuError, match="'gpu' is not allowed; use"):
        judge(dec, oracle, per_class=4, engines=["gpu"])
    with pytest.raises(BitmcuError, match=r"--temperature 3.0: must be in \(0, 2\]"):
        judge(dec, oracle, per_class=4, temperature=3.0)


def test_temperature_narrows_the_samples(runs):
    dec, oracle = runs
    hot = judge(dec, oracle, per_class=30, engines=["c"])
    cold = judge(dec, oracle, per_class=30, engines=["c"], temperature=0.1)
    assert (hot.temperature, cold.temperature) == (1.0, 0.1)
    assert cold.latent_scale == rng.latent_scale(0.1) < hot.latent_scale == rng.latent_scale(1)
    assert "temperature 0.1: latent scale" in cold.text()
    # near the prior's mean the samples of a class lie close together
    assert np.mean(cold.engines[0].pairwise) < 0.8 * np.mean(hot.engines[0].pairwise)


def test_guided_decoder(runs, tiny_run, tmp_path):
    """train.guide: the classifier's accuracy on prior samples is recorded per epoch, and the
    guide must be a classifier of the decoder's data."""
    import json as _json

    from bitmcu.train import train

    dec, oracle = runs
    cfg = load_config(None, [*TINY, "train.epochs=1", f"train.guide={oracle}"])
    out = train(cfg, run_dir=tmp_path / "g", quiet=True)
    m = _json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= m["train_guide_acc"] <= 1
    for guide, words in ((dec, "is a decoder"), (tiny_run, "a classifier of .*mnist"),
                         (tmp_path / "none", "train the guide classifier first")):
        with pytest.raises(BitmcuError, match=words):
            train(load_config(None, [*TINY, f"train.guide={guide}"]), run_dir=tmp_path / "x",
                  quiet=True)
    with pytest.raises(BitmcuError, match="'train.guide'.* guides a decoder's samples"):
        load_config(None, [f"train.guide={oracle}"])
    with pytest.raises(BitmcuError, match="'train.guide_weight': -1.0 must be >= 0"):
        load_config(None, [*TINY, "train.guide_weight=-1"])
