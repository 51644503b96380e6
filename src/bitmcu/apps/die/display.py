"""The die's picture on the OLED: a side x side generated image scaled up to 64x64 and dithered
to one bit per pixel (as die.c draws it), and that picture averaged back to side x side, which
is what a viewer, and the judges of the display path, see."""

from __future__ import annotations

import numpy as np

from .firmware import LEFT_COLUMN

BAYER = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]])


def display_bits(img: np.ndarray, dither: str = "ordered") -> np.ndarray:
    """(..., 64, 64) bool: the picture the firmware draws of (..., side, side) uint8 images,
    scaled up to 64x64 and dithered (ordered: pixel > 16 * bayer[y % 4][x % 4] + 8 in display
    coordinates; threshold: pixel >= 128)."""
    k = 64 // img.shape[-1]
    big = np.repeat(np.repeat(img.astype(np.int64), k, axis=-2), k, axis=-1)
    if dither == "ordered":
        yy, xx = np.mgrid[0:64, 0:64]
        return big > BAYER[yy % 4, xx % 4] * 16 + 8
    return big >= 128


def display_image(img: np.ndarray, dither: str = "ordered") -> np.ndarray:
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
