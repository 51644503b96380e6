"""The classical pip counter: real renders read right, and hand-made pictures whose faults a
person sees (a pip fused with the outline, a ghost smudge, a pip outside the die, nothing at
all) read as a person would count them."""

import numpy as np
import pytest

from bitmcu.apps.pips import count_pips, ghost_share
from bitmcu.core.errors import BitmcuError

FACES = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)],
         4: [(-1, -1), (-1, 1), (1, -1), (1, 1)], 5: [(-1, -1), (-1, 1), (0, 0), (1, -1), (1, 1)],
         6: [(-1, -1), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 1)]}


def die(face: int | None = None, outline: bool = True, extra=(), spread: float = 5.5,
        level: int = 230) -> np.ndarray:
    """A 32x32 die: a square outline 2 px wide around 5..26, pips of radius 2.2 at the face's
    places (spread px from the centre), and discs at ``extra`` (row, column, level)."""
    img = np.zeros((32, 32), np.float64)
    if outline:
        img[5:27, 5:27] = level
        img[7:25, 7:25] = 0
    yy, xx = np.mgrid[0:32, 0:32]
    spots = [(15.5 + spread * r, 15.5 + spread * c, level) for r, c in FACES.get(face, [])]
    for r, c, v in [*spots, *extra]:
        img[(yy - r) ** 2 + (xx - c) ** 2 <= 2.2 ** 2] = v
    return img.astype(np.uint8)


def test_clean_faces_and_faces_without_an_outline():
    for f in range(1, 7):
        assert count_pips(die(f))[0] == f, f
        assert count_pips(die(f, outline=False))[0] == f, f
        assert ghost_share(die(f))[0] == 0


def test_what_a_person_sees_is_what_it_counts():
    # a third pip crowded into the outline (top right) is part of the outline, not a pip:
    # three drawn, two counted, as the pips of the shipped die's face 6 are read
    assert count_pips(die(2, extra=[(8.5, 22.5, 230)]))[0] == 2
    assert count_pips(die(2, extra=[(11.0, 20.0, 230)]))[0] == 3  # clear of it: three
    # a ghost as bright as a pip in the empty corner of a one reads as a second pip
    assert count_pips(die(1, extra=[(10.0, 21.0, 200)]))[0] == 2
    # a faint smudge there is no pip, but it is lit, and belongs to no part of the die
    faint = die(1, extra=[(10.0, 21.0, 90)])
    assert count_pips(faint)[0] == 1 and ghost_share(faint)[0] > 0.02
    # a blob outside the die is not a pip of it, and is a ghost
    outside = np.pad(die(2)[2:30, 2:30], 2)
    outside[29:32, 0:3] = 230
    assert count_pips(outside)[0] == 2 and ghost_share(outside)[0] > 0
    # nothing at all, and seven pips, are unreadable
    assert count_pips(np.zeros((32, 32), np.uint8))[0] == 0
    assert count_pips(die(6, extra=[(15.5, 15.5, 230)]))[0] == 0


def test_real_renders_read_right_plain_and_on_the_display():
    """Renders the calibration never saw (another seed), plain and as the OLED shows them."""
    from bitmcu.apps.die.display import display_image
    from bitmcu.data.dice import render
    from bitmcu.train.config import DiceConfig

    x, y = render(DiceConfig(), 600, 32, seed=777)
    assert (count_pips(x) == y + 1).mean() >= 0.995
    for dither in ("ordered", "contrast"):
        shown = np.stack([display_image(im, dither) for im in x])
        assert (count_pips(shown) == y + 1).mean() >= 0.99, dither
    assert ghost_share(x).mean() < 0.005


def test_bad_input_is_refused():
    with pytest.raises(BitmcuError, match=r"\(N, side, side\) uint8 images, not float64"):
        count_pips(np.zeros((2, 32, 32)))
