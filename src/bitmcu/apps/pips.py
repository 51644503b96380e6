"""A classical pip counter for pictures of a die: no learning, its few constants calibrated on
the renderer's real training images only. A judge of generated dice that shares nothing with
the learned oracles: it reads the picture as a person counts pips.

For each image (side N, constants given at N = 32 and scaled with N):

1. blur it lightly (Gaussian, sigma 0.5 px): the display's dithering, averaged back to grey,
   reads like the plain picture;
2. the die: the connected pixels >= LOW (8-neighbour) that extend over more than SPAN px are its
   outline, or the pieces of it where the image cuts it off; the die is their convex hull;
3. the pips: the blobs of pixels >= HIGH (4-neighbour) at most SPAN px across whose centre
   lies at least DEPTH px inside the die. Where no outline is found (the renderer draws one
   die in ten without), every such blob counts.

The count is that of the pips when it is 1..6, else 0 (unreadable). A pip fused with the
outline, a smudge as bright as a pip, a blob outside the die: each changes the count, which
is the point of a strict judge.

:func:`ghost_share` is the figure beside it: the share of an image's lit pixels (>= LOW) that
belong to no part of a die, neither its outline nor a pip (each grown by one pixel for its
anti-aliased fringe). Real renders have a small share; ghosts and speckle raise it.

Calibration (benchmarks/RESULTS.md): LOW, HIGH, DEPTH and the blur were chosen on training
renders 0..18,000 of the default ``dice`` data set at 32x32, plain and after the display's
2x scaling, ordered dithering and averaging back (the die's display then had no contrast
curve; its default now has one, which the counter reads as well: benchmarks/RESULTS.md, "The
display's levels").
"""

from __future__ import annotations

import numpy as np

from ..core.errors import BitmcuError

LOW = 60  # the outline (and what counts as lit)
HIGH = 110  # pips
SPAN = 7  # px at 32x32: more than this across is outline, not a pip
DEPTH = 3.5  # px at 32x32: how far inside the die a pip's centre lies at least
SIGMA = 0.5  # px at 32x32: the blur
SIDE = 32  # the side the constants are given at


def _parts(img: np.ndarray):
    """(blurred image, outline mask, pip label image, labels of the pips) of one image."""
    from scipy import ndimage

    side = img.shape[0]
    k = side / SIDE
    x = ndimage.gaussian_filter(img.astype(np.float64), SIGMA * k)
    eight = np.ones((3, 3), bool)
    low, n = ndimage.label(x >= LOW, eight)
    boxes = ndimage.find_objects(low)
    span = SPAN * k
    outline = np.isin(low, [i + 1 for i, b in enumerate(boxes) if _extent(b) > span])
    blobs, m = ndimage.label(x >= HIGH)
    if m == 0:
        return x, outline, blobs, []
    small = [i + 1 for i, b in enumerate(ndimage.find_objects(blobs)) if _extent(b) <= span]
    if not outline.any():
        return x, outline, blobs, small
    die = _hull(outline)
    depth = ndimage.distance_transform_edt(np.pad(die, 1))[1:-1, 1:-1]
    centres = ndimage.center_of_mass(x >= HIGH, blobs, small)
    pips = [i for i, (cy, cx) in zip(small, centres, strict=True)
            if depth[int(round(cy)), int(round(cx))] >= DEPTH * k]
    return x, outline, blobs, pips


def _extent(box) -> int:
    return max(box[0].stop - box[0].start, box[1].stop - box[1].start)


def _hull(mask: np.ndarray) -> np.ndarray:
    """The pixels inside the convex hull of ``mask``'s pixels (and ``mask`` itself)."""
    from matplotlib.path import Path
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask)[:, ::-1].astype(np.float64)
    try:
        corners = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):  # all on one line: no inside
        return mask.copy()
    side = mask.shape[0]
    yy, xx = np.mgrid[0:side, 0:mask.shape[1]]
    inside = Path(corners).contains_points(np.stack([xx.ravel(), yy.ravel()], 1), radius=1e-9)
    return inside.reshape(mask.shape) | mask


def _check(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise BitmcuError(f"the pip counter reads (N, side, side) uint8 images, not "
                          f"{images.dtype} {images.shape}")
    return images


def read_dice(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(counts, ghost shares) of (N, side, side) uint8 dice pictures in one pass: see
    :func:`count_pips` and :func:`ghost_share`."""
    from scipy import ndimage

    images = _check(images)
    counts = np.zeros(len(images), dtype=np.int64)
    ghost = np.zeros(len(images))
    grow = np.ones((3, 3), bool)
    for i, img in enumerate(images):
        x, outline, blobs, pips = _parts(img)
        counts[i] = len(pips) if 1 <= len(pips) <= 6 else 0
        lit = x >= LOW
        if lit.any():
            parts = ndimage.binary_dilation(outline | np.isin(blobs, pips), grow)
            ghost[i] = float((lit & ~parts).sum() / lit.sum())
    return counts, ghost


def count_pips(images: np.ndarray) -> np.ndarray:
    """(N,) pip counts 1..6 of (N, side, side) uint8 dice pictures; 0: unreadable."""
    return read_dice(images)[0]


def ghost_share(images: np.ndarray) -> np.ndarray:
    """(N,) share of each image's lit pixels (>= LOW after the blur) that belong neither to
    the die's outline nor to a pip (both grown by a pixel); 0 for an image with none lit."""
    return read_dice(images)[1]
