"""The dice renderer: deterministic, labelled by its pip count, different seeds per split."""

import numpy as np
import pytest
from scipy.special import ndtr

from bitmcu.core.errors import BitmcuError
from bitmcu.data import load_dataset
from bitmcu.data.dice import FACTORS, PIPS, render, render_factors
from bitmcu.train.config import DiceConfig, load_config


def blobs(mask: np.ndarray) -> int:
    """Connected components (4-neighbourhood) of a boolean image."""
    seen = np.zeros_like(mask)
    count = 0
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        count += 1
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx]
                        and not seen[ny, nx]):
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_render_is_deterministic_and_seeded():
    cfg = DiceConfig()
    a, la = render(cfg, 700, 32, 3)
    b, lb = render(cfg, 700, 32, 3)
    c, _ = render(cfg, 700, 32, 4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.dtype == np.uint8 and a.shape == (700, 32, 32)
    assert not np.array_equal(a, c)
    assert set(np.unique(la)) == set(range(6))


@pytest.mark.parametrize("size", [32, 16])
def test_labels_are_the_pip_count(size):
    """Without outline and noise, the lit blobs of an image are its pips: label + 1 of them."""
    cfg = DiceConfig(outline=0.0, noise=0.0, background=0.0, rotation=10.0,
                     pip_radius=[0.15, 0.17], scale=[0.9, 0.95] if size == 16 else [0.62, 0.85])
    x, y = render(cfg, 120, size, 1)
    counts = np.array([blobs(im > 100) for im in x])
    np.testing.assert_array_equal(counts, y + 1)


def test_outline_and_variation():
    x, y = render(DiceConfig(noise=0.0, background=0.0, outline=1.0), 300, 32, 2)
    one = x[y == 0]
    assert (one > 128).sum(axis=(1, 2)).min() > 20  # face 1 still has its outline's pixels
    assert len({im.tobytes() for im in x}) == len(x)  # no two alike
    assert len(PIPS) == 6


def test_dataset_dice_splits_and_cache(tmp_path, capsys):
    cfg = DiceConfig(train=600, test=200, seed=12345)  # a set no other test has made
    d = load_dataset("dice", 32, dice=cfg)
    err = capsys.readouterr().err  # the rendering says what it does, and when it is done
    assert "bitmcu: making dice-32 (once; kept in" in err and "bitmcu: made dice-32: " in err
    assert d.n_classes == 6 and d.train_x.shape == (600, 32, 32) and d.test_x.shape == (200, 32, 32)
    train = {im.numpy().tobytes() for im in d.train_x}
    assert not any(im.numpy().tobytes() in train for im in d.test_x)
    again = load_dataset("dice", 32, dice=cfg)  # from the cache
    np.testing.assert_array_equal(again.test_x.numpy(), d.test_x.numpy())
    assert "making" not in capsys.readouterr().err


def test_factor_latents_draw_the_same_dice_clean():
    # without the variation the latent does not carry, render() draws exactly the factor dice
    cfg = DiceConfig(shear=0.0, perspective=0.0, outline=1.0, outline_width=[0.1, 0.1],
                     background=0.0, noise=0.0)
    x, _ = render(cfg, 700, 16, 4)
    z, clean = render_factors(cfg, 700, 16, 4, len(FACTORS))
    np.testing.assert_array_equal(clean, x)
    # with it, the clean dice differ from the noisy ones but keep their pips
    noisy, _ = render(DiceConfig(), 3000, 32, 1)
    z, clean = render_factors(DiceConfig(), 3000, 32, 1, 5)
    assert z.shape == (3000, 5) and z.dtype == np.float32
    assert np.abs(z.mean(0)).max() < 0.08 and np.abs(z.std(0) - 1).max() < 0.08  # N(0, 1)
    assert (clean != noisy).any(axis=(1, 2)).all()
    # the uniform prior's latents: linear in the factors' positions, unit variance, the same
    # dice
    zu, clean_u = render_factors(DiceConfig(), 3000, 32, 1, 5, prior="uniform")
    np.testing.assert_array_equal(clean_u, clean)
    assert np.abs(zu).max() <= np.sqrt(3) + 1e-6 and np.abs(zu.std(0) - 1).max() < 0.05
    np.testing.assert_allclose(zu, (ndtr(z) - 0.5) * 2 * np.sqrt(3), atol=2e-3)
    # a latent carrying fewer factors leaves the rest at mid-range: less variation
    _, two = render_factors(DiceConfig(), 3000, 32, 1, 2)
    assert two.astype(float).std(0).mean() < clean.astype(float).std(0).mean()


@pytest.mark.parametrize("key, value, msg", [
    ("data.dice.scale", "[0.9, 0.5]", "data.dice.scale"),
    ("data.dice.rotation", "-5", "data.dice.rotation"),
    ("data.dice.train", "0", "data.dice.train"),
    ("data.size", "80", "4..64"),
    ("train.objective", "factors", "model.family"),
])
def test_bad_dice_config(key, value, msg):
    with pytest.raises(BitmcuError, match=msg.replace(".", r"\.")):
        load_config(None, ["data.dataset=dice", f"{key}={value}"])
