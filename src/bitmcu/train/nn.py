"""Quantization-aware layers: weight fake quantization (STE), activation fake quantization, norms."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..quant import get_scheme
from .clip import effective_bits, octav_clip, std_clip


class RMSNorm(nn.Module):
    """x / rms(x) over the feature dimension; no learnable gain (foldable into an integer shift)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)


def make_norm(kind: str, features: int) -> nn.Module:
    if kind == "rms":
        return RMSNorm()
    if kind == "layer":
        return nn.LayerNorm(features, elementwise_affine=False)
    if kind == "batch":
        return nn.BatchNorm1d(features, affine=False)
    raise ValueError(kind)


def act_fake_quant(x: torch.Tensor, bits: int = 8, unsigned: bool = False) -> torch.Tensor:
    """Per-sample absmax fake quantization with the straight-through estimator.

    ``unsigned``: inputs are known to be >= 0 (ReLU outputs and pixels under RMS norm), so all
    2^bits codes are used for 0..2^bits-1. The integer engine replaces the float scale with
    ShiftNorm (a power-of-two scale); the difference is at most one bit of resolution.
    """
    qmax = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    scale = qmax / x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
    q = (x * scale).round().clamp(-qmax, qmax) / scale
    return x + (q - x).detach()


class QuantWeights:
    """Weight quantization shared by :class:`QuantLinear` and the convolutions: a registered
    scheme, a clipping range (``clip``, per tensor or per output channel) updated by
    :meth:`update_clip` once per epoch until it is frozen and saved in the state dict, and the
    integer levels of the weights viewed as an (out, fan-in) matrix."""

    def _init_quant(self, scheme: str, n_out: int, per_channel: bool = False,
                    clip_method: str = "octav", clip_std: float = 2.5) -> None:
        self.scheme = get_scheme(scheme)
        self.per_channel = per_channel
        self.clip_method = clip_method
        self.clip_std = clip_std
        self.register_buffer("clip", torch.ones(n_out if per_channel else ()))
        self.quantize = True  # False: float weights (training warm-up, `model.quant_from`)
        self.update_clip()

    def latent_weight(self) -> torch.Tensor:
        """(out, fan-in) float weights as the scheme quantizes them (row mean removed if
        the scheme is centered)."""
        w = self.weight.flatten(1)
        if self.scheme.centered:
            w = w - w.mean(dim=-1, keepdim=True)
        return w

    @torch.no_grad()
    def update_clip(self) -> None:
        if not self.scheme.exportable:
            return
        w = self.latent_weight()
        dim = 0 if self.per_channel else None
        if self.clip_method == "octav":
            c = octav_clip(w, effective_bits(self.scheme.n_levels()), dim=dim)
        else:
            c = std_clip(w, self.clip_std, dim=dim)
        self.clip.copy_(c)

    def step(self) -> torch.Tensor:
        """Float value of one integer weight unit: clip / largest level."""
        s = self.clip / self.scheme.max_level() if self.scheme.exportable else self.clip
        return s.unsqueeze(1) if self.per_channel else s

    @torch.no_grad()
    def integer_weight(self) -> torch.Tensor:
        """The integer levels the deployed model uses, shape (out, fan-in)."""
        return self.scheme.quantize_int(self.latent_weight(), self.step()).to(torch.int32)

    def dampening(self) -> torch.Tensor:
        """Mean squared distance of the latent weights to their quantized values, in steps.

        Pulling latent weights towards their levels stops them oscillating across a decision
        threshold late in training (Nagel et al., "Overcoming Oscillations in QAT", 2022).
        """
        if not self.scheme.exportable:
            return self.weight.new_zeros(())
        w = self.latent_weight()
        step = self.step()
        q = self.scheme.quantize_int(w.detach(), step) * step
        return (((w - q) / step) ** 2).mean()


class QuantLinear(QuantWeights, nn.Linear):
    """Linear layer whose weights are fake-quantized with a registered scheme."""

    def __init__(self, n_in: int, n_out: int, scheme: str, bias: bool = False,
                 per_channel: bool = False, clip_method: str = "octav", clip_std: float = 2.5):
        nn.Linear.__init__(self, n_in, n_out, bias=bias)
        self._init_quant(scheme, n_out, per_channel, clip_method, clip_std)

    def quantized_weight(self) -> torch.Tensor:
        if not self.quantize:
            return self.latent_weight()
        return self.scheme.fake_quant(self.weight, self.step())

    def forward(self, x):
        return nn.functional.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self):
        return f"{super().extra_repr()}, scheme={self.scheme.name}"
