"""Clipping ranges for weight quantization: OCTAV (optimal MSE clipping) and k * std."""

from __future__ import annotations

import math

import torch


def octav_clip(w: torch.Tensor, bits: float, dim: int | None = None, iters: int = 20) -> torch.Tensor:
    """Optimal clipping scalar by OCTAV's Newton iteration (Sakr et al., ICML 2022).

    Minimises the expected quantization noise (clipping + rounding) of ``w`` quantized with
    ``bits`` bits:  s <- E[|w| 1{|w|>s}] / (4^-B / 3 * E[1{0<|w|<=s}] + E[1{|w|>s}]).
    With ``dim`` set, one scalar per index of that dimension (per output channel: dim=0).
    """
    a = w.detach().abs().float()
    if dim is None:
        a = a.reshape(1, -1)
    else:
        a = a.movedim(dim, 0).reshape(a.shape[dim], -1)
    s = a.mean(dim=1, keepdim=True) * 3.0 + 1e-12
    k = 4.0 ** (-bits) / 3.0
    for _ in range(iters):
        over = (a > s).float()
        inside = ((a > 0) & (a <= s)).float()
        num = (a * over).mean(dim=1, keepdim=True)
        den = k * inside.mean(dim=1, keepdim=True) + over.mean(dim=1, keepdim=True)
        s = torch.where(den > 0, num / den.clamp_min(1e-30), s)
        s = torch.where(s > 0, s, a.max(dim=1, keepdim=True).values + 1e-12)
    return s.squeeze(1) if dim is not None else s.reshape(())


def std_clip(w: torch.Tensor, k: float, dim: int | None = None) -> torch.Tensor:
    """Clipping range of ``k`` standard deviations (``quantscale``-style)."""
    w = w.detach().float()
    if dim is None:
        return (w.std() * k).clamp_min(1e-12)
    return (w.movedim(dim, 0).reshape(w.shape[dim], -1).std(dim=1) * k).clamp_min(1e-12)


def effective_bits(n_levels: int) -> float:
    return math.log2(n_levels)
