"""Model families. A model is rebuilt from its config alone (checkpoints carry the config)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import Config
from .errors import BitmcuError, choices
from .nn import QuantLinear, act_fake_quant, make_norm
from .quant import get_scheme, octav_clip
from .quant.clip import effective_bits


class FCModel(nn.Module):
    """Fully connected: size*size inputs -> hidden... -> classes.

    Each block: norm -> activation fake-quant (8 bit) -> quantized linear -> ReLU (not after the
    last). Input: (B, size, size) pixels 0..255 (any float/uint8 tensor).
    """

    def __init__(self, cfg: Config, n_classes: int, n_in: int | None = None):
        super().__init__()
        m = cfg.model
        widths = [n_in or cfg.data.size * cfg.data.size, *m.hidden, n_classes]
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

    def forward(self, x: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).float()  # (B, n_in)
        if not scaled:
            x = x / 255.0  # pixels
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers, strict=True)):
            x = act_fake_quant(norm(x), self.act_bits, self.act_unsigned)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x * self.log_temperature.exp()

    def update_clips(self) -> None:
        for layer in self.layers:
            layer.update_clip()


CONV_STAGES = ("dw", "pool")


def cnn_shapes(cfg: Config) -> list[int]:
    """Feature map side after the first convolution and after each stage; errors name the stage.

    >>> from bitmcu.config import Config, ModelConfig
    >>> cnn_shapes(Config(model=ModelConfig(family="cnn")))
    [14, 12, 6, 4, 2]
    """
    m = cfg.model
    if m.channels < 1:
        raise BitmcuError(f"config key 'model.channels': {m.channels} must be >= 1")
    side = cfg.data.size - 2
    sides = [side]
    if side < 1:
        raise BitmcuError(f"model.family cnn: a {cfg.data.size}x{cfg.data.size} input is too small "
                          "for a 3x3 convolution")
    for i, st in enumerate(m.conv):
        if st not in CONV_STAGES:
            raise BitmcuError(f"config key 'model.conv[{i}]': {st!r} is not allowed; use "
                              f"{choices(CONV_STAGES)}")
        new = side - 2 if st == "dw" else side // 2
        if new < 1 or (st == "pool" and side % 2):
            raise BitmcuError(
                f"config key 'model.conv[{i}]': {st!r} cannot be applied to a {side}x{side} "
                f"feature map (stages {m.conv} on a {cfg.data.size}x{cfg.data.size} input)")
        side = new
        sides.append(side)
    return sides


class QuantConv2d(nn.Conv2d):
    """3x3 convolution (full or depthwise) with fake-quantized weights, per-tensor clipping."""

    def __init__(self, c_in: int, c_out: int, scheme: str, groups: int = 1):
        super().__init__(c_in, c_out, 3, groups=groups, bias=False)
        self.scheme = get_scheme(scheme)
        self.register_buffer("clip", torch.ones(()))
        self.update_clip()

    @torch.no_grad()
    def update_clip(self) -> None:
        if self.scheme.exportable:
            self.clip.copy_(octav_clip(self.weight, effective_bits(self.scheme.n_levels())))

    def forward(self, x):
        w = self.weight
        if self.scheme.exportable:
            w = self.scheme.fake_quant(w.flatten(1), self.clip / self.scheme.max_level())
            w = w.view_as(self.weight)
        return self._conv_forward(x, w, None)


class CNNModel(nn.Module):
    """3x3 conv 1 -> C, then per channel depthwise 3x3 convs and 2x2 max-pools (no padding,
    ReLU after each conv), flatten, then the fully connected head of :class:`FCModel`."""

    def __init__(self, cfg: Config, n_classes: int):
        super().__init__()
        m = cfg.model
        sides = cnn_shapes(cfg)
        cs = m.conv_scheme or m.scheme
        self.conv1 = QuantConv2d(1, m.channels, cs)
        self.stages = nn.ModuleList()
        for st in m.conv:
            self.stages.append(QuantConv2d(m.channels, m.channels, cs, groups=m.channels)
                               if st == "dw" else nn.MaxPool2d(2))
        self.n_features = m.channels * sides[-1] * sides[-1]
        self.head = FCModel(cfg, n_classes, n_in=self.n_features)

    def forward(self, x):
        x = x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1]).float() / 255.0
        x = torch.relu(self.conv1(x))
        for st in self.stages:
            x = torch.relu(st(x)) if isinstance(st, QuantConv2d) else st(x)
        return self.head(x.flatten(1), scaled=True)

    @property
    def layers(self):
        return self.head.layers

    def update_clips(self) -> None:
        self.conv1.update_clip()
        for st in self.stages:
            if isinstance(st, QuantConv2d):
                st.update_clip()
        self.head.update_clips()


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    if cfg.model.family == "fc":
        return FCModel(cfg, n_classes)
    if cfg.model.family == "cnn":
        return CNNModel(cfg, n_classes)
    raise ValueError(cfg.model.family)  # config validation rejects other families first
