"""Downscaling and batched augmentation on tensors (affine_grid/grid_sample, no per-image loops).

Preprocessing contract with the deployed model: the network sees exactly what the chip samples,
``size x size`` uint8 pixels with 0 as background. Training divides by 255 before the first
normalization layer, which is scale-invariant, so the integer engine takes the raw pixels.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..core.errors import BitmcuError, choices

RESIZE_MODES = ("area", "bilinear")


def center_crop(x: torch.Tensor, crop: int | None) -> torch.Tensor:
    """The central ``crop x crop`` square of images (..., H, W); ``None`` keeps them whole."""
    h, w = x.shape[-2:]
    if crop is None or crop == h == w:
        return x
    if crop > min(h, w):
        raise BitmcuError(f"data.crop {crop} is larger than the {h}x{w} images")
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def downscale(x: torch.Tensor, size: int, mode: str = "area", chunk: int = 8192,
              crop: int | None = None) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) pixels 0..255 -> (N, size, size) uint8, antialiased.

    ``crop`` first keeps only the central ``crop x crop`` square (MNIST digits fill the central
    20x20 of their 28x28 frame, so a crop spends more of the input pixels on the digit).
    ``area`` averages the source pixels under each target pixel; ``bilinear`` uses the
    antialiased bilinear filter. Output values are rounded to whole pixel values, as a camera or
    ADC of the device would deliver them.
    """
    if mode not in RESIZE_MODES:
        raise BitmcuError(f"resize mode {mode!r} is not allowed; use {choices(RESIZE_MODES)}")
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(1)
    x = center_crop(x, crop)
    outs = []
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk].float()
        if xb.shape[-1] == size and xb.shape[-2] == size:
            yb = xb
        elif mode == "area":
            yb = F.interpolate(xb, size=(size, size), mode="area")
        else:
            yb = F.interpolate(xb, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
        outs.append(yb.round().clamp(0, 255).to(torch.uint8))
    y = torch.cat(outs) if outs else torch.empty(0, 1, size, size, dtype=torch.uint8)
    return y.squeeze(1) if squeeze else y


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) matrix of a 1-D Gaussian blur with reflected borders: ``M @ v`` blurs ``v``.

    One small matrix product per axis is many times faster than a 1-channel convolution."""
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    m = torch.zeros(n, n)
    period = max(1, 2 * (n - 1))  # reflection at 0 and n - 1, repeated for wide kernels
    for i in range(n):
        for t in range(-r, r + 1):
            j = (i + t) % period
            m[i, min(j, period - j)] += k[t + r]
    return m


class Augmenter:
    """Random rotation, translation, scale, optional shear (slant) and optional elastic
    distortion of a batch."""

    def __init__(self, rotation: float = 10.0, translate: float = 0.1, scale: float = 0.1,
                 elastic: float = 0.0, elastic_sigma: float = 4.0, shear: float = 0.0):
        self.rotation = rotation
        self.translate = translate
        self.scale = scale
        self.elastic = elastic
        self.elastic_sigma = elastic_sigma
        self.shear = shear

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, 1, H, W) float pixels -> augmented (B, 1, H, W) float pixels."""
        b, _, h, w = x.shape

        def uniform(lo, hi):
            return torch.rand(b, generator=gen) * (hi - lo) + lo

        ang = uniform(-self.rotation, self.rotation) * (math.pi / 180)
        zoom = uniform(1 - self.scale, 1 + self.scale)
        tx = uniform(-self.translate, self.translate) * 2
        ty = uniform(-self.translate, self.translate) * 2
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        # horizontal shear x += k * y (the slant of handwriting) after the rotation; drawn only
        # when asked for, so that configs without it keep their random stream
        k = (torch.tan(uniform(-self.shear, self.shear) * (math.pi / 180)) if self.shear > 0
             else torch.zeros(b))
        theta = torch.stack(
            [torch.stack([cos, cos * k - sin, tx], 1), torch.stack([sin, sin * k + cos, ty], 1)], 1
        ).to(x.device)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        if self.elastic > 0:
            field = torch.rand(b, 2, h, w, generator=gen) * 2 - 1
            field = (_blur_matrix(h, self.elastic_sigma) @ field
                     @ _blur_matrix(w, self.elastic_sigma).T)
            field = field / field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
            disp = field.permute(0, 2, 3, 1) * (self.elastic * 2 / torch.tensor([w, h]))
            grid = grid + disp.to(x.device)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
