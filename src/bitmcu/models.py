"""Model families. A model is rebuilt from its config alone (checkpoints carry the config)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import Config
from .nn import QuantLinear, act_fake_quant, make_norm


class FCModel(nn.Module):
    """Fully connected: size*size inputs -> hidden... -> classes.

    Each block: norm -> activation fake-quant (8 bit) -> quantized linear -> ReLU (not after the
    last). Input: (B, size, size) pixels 0..255 (any float/uint8 tensor).
    """

    def __init__(self, cfg: Config, n_classes: int):
        super().__init__()
        m = cfg.model
        widths = [cfg.data.size * cfg.data.size, *m.hidden, n_classes]
        schemes = cfg.layer_scheme_names(len(widths) - 1)
        self.act_bits = m.act_bits
        self.act_unsigned = m.norm == "rms"  # RMS keeps ReLU outputs >= 0
        self.norms = nn.ModuleList(make_norm(m.norm, w) for w in widths[:-1])
        self.layers = nn.ModuleList(
            QuantLinear(a, b, s, bias=m.bias, per_channel=m.scale == "per_channel",
                        clip_method=m.clip, clip_std=m.clip_std)
            for a, b, s in zip(widths[:-1], widths[1:], schemes, strict=True)
        )
        # CE temperature: the integer model's argmax ignores it
        self.log_temperature = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).float() / 255.0  # (B, size*size)
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers, strict=True)):
            x = act_fake_quant(norm(x), self.act_bits, self.act_unsigned)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x * self.log_temperature.exp()

    def update_clips(self) -> None:
        for layer in self.layers:
            layer.update_clip()


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    if cfg.model.family == "fc":
        return FCModel(cfg, n_classes)
    raise ValueError(cfg.model.family)  # config validation rejects other families first
