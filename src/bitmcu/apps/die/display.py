"""The die's picture on the OLED: a side x side generated image scaled up to 64x64 and dithered
to one bit per pixel (as die.c draws it), and that picture averaged back to side x side, which
is what a viewer, and the judges of the display path, see.

Dithering (``bitmcu die --dither``): ``contrast`` (the default) is the 4x4 Bayer matrix of
``ordered`` applied after a levels curve, 1.25 (v - 30) clipped to 0..255: the faint grey a
generated picture leaves between its parts goes black, its parts' grey goes brighter. Folded
into the matrix's thresholds, it costs the firmware nothing. ``threshold`` lights a pixel
from 128. The curve was chosen on validation samples of three die decoders and the renderer's
real test images (benchmarks/RESULTS.md, "The display's levels")."""

from __future__ import annotations

import numpy as np

BAYER = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])
LEFT_COLUMN = 32  # the 64x64 picture spans display columns 32..95 (die.c's LEFT)
DITHERS = ("contrast", "ordered", "threshold")
DEFAULT_DITHER = "contrast"
BLACK, GAIN = 30, (5, 4)  # the contrast curve: (v - BLACK) * 5 / 4


def thresholds(dither: str = DEFAULT_DITHER) -> np.ndarray:
    """(4, 4) ints: a display pixel at (x, y) is lit where its picture pixel is above
    thresholds[y % 4][x % 4]. ordered: 16 b + 8 of the Bayer matrix's b; contrast: the same
    after the curve (v - 30) * 5 / 4, that is v > 30 + floor((16 b + 8) * 4 / 5) for whole v;
    threshold: v >= 128 everywhere.

    >>> thresholds("contrast")[0].tolist(), thresholds("ordered")[0].tolist()
    ([36, 138, 62, 164], [8, 136, 40, 168])
    """
    if dither == "ordered":
        return BAYER * 16 + 8
    if dither == "contrast":
        return BLACK + (BAYER * 16 + 8) * GAIN[1] // GAIN[0]
    if dither == "threshold":
        return np.full((4, 4), 127)
    raise ValueError(f"dither {dither!r}: use one of {', '.join(DITHERS)}")


def display_bits(img: np.ndarray, dither: str = DEFAULT_DITHER) -> np.ndarray:
    """(..., 64, 64) bool: the picture the firmware draws of (..., side, side) uint8 images,
    scaled up to 64x64 and dithered: lit where pixel > thresholds(dither)[y % 4][x % 4] in
    display coordinates."""
    k = 64 // img.shape[-1]
    big = np.repeat(np.repeat(img.astype(np.int64), k, axis=-2), k, axis=-1)
    yy, xx = np.mgrid[0:64, 0:64]
    return big > thresholds(dither)[yy % 4, xx % 4]


def display_image(img: np.ndarray, dither: str = DEFAULT_DITHER) -> np.ndarray:
    """(..., side, side) uint8 images as the OLED shows them, averaged back to their side: what
    a judge of the display path reads (see :func:`frame_image`)."""
    return _averaged(display_bits(img, dither), img.shape[-1])


def frame_image(frame: np.ndarray, side: int = 32) -> np.ndarray:
    """The 64x64 picture of a frame, averaged back to the model's side x side (uint8, 0..255):
    what the judges read."""
    return _averaged(frame[:, LEFT_COLUMN:LEFT_COLUMN + 64], side)


def _averaged(bits: np.ndarray, side: int) -> np.ndarray:
    """(..., 64, 64) bool pictures averaged over k x k blocks to (..., side, side) uint8."""
    k = 64 // side
    blocks = bits.reshape(*bits.shape[:-2], side, k, side, k)
    return (blocks.mean(axis=(-3, -1)) * 255).round().astype(np.uint8)
