"""Model families. A model is rebuilt from its config alone (checkpoints carry the config)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import Config
from .errors import BitmcuError, choices
from .ir import MAX_FRONT
from .nn import QuantLinear, QuantWeights, act_fake_quant, make_norm
from .quant import get_scheme


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
        self.bias_unit = m.bias_unit
        extra = int(m.bias_unit)
        self.act_bits = m.act_bits
        self.act_unsigned = m.norm == "rms"  # RMS keeps ReLU outputs >= 0
        self.norms = nn.ModuleList(make_norm(m.norm, w) for w in widths[:-1])
        self.layers = nn.ModuleList(
            QuantLinear(a + extra, b, s, bias=m.bias, per_channel=m.scale == "per_channel",
                        clip_method=m.clip, clip_std=m.clip_std)
            for a, b, s in zip(widths[:-1], widths[1:], schemes, strict=True)
        )
        # CE temperature: the integer model's argmax ignores it
        self.log_temperature = nn.Parameter(torch.tensor(0.0))

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, layer) of every layer with weights, input first."""
        return [(f"fc{i}", L) for i, L in enumerate(self.layers)]

    def forward(self, x: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).float()  # (B, n_in)
        if not scaled:
            x = x / 255.0  # pixels
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers, strict=True)):
            x = act_fake_quant(norm(x), self.act_bits, self.act_unsigned)
            if self.bias_unit:  # the largest input, as in the integer engine
                x = torch.cat([x, x.detach().amax(dim=-1, keepdim=True)], dim=-1)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x * self.log_temperature.exp()

    def update_clips(self, calib: torch.Tensor | None = None) -> None:
        for layer in self.layers:
            layer.update_clip()


CONV_STAGES = ("dw", "dw*K", "pool")


def cnn_stage(st: str, i: int) -> tuple[str, int]:
    """A ``model.conv`` entry -> (op, depth multiplier): ``dw`` (1), ``dw*K`` (each channel
    feeds K channels, each with its own kernel) or ``pool``."""
    op, star, k = str(st).partition("*")
    if op == "pool" and not star:
        return "pool", 1
    if op == "dw" and (not star or (k.isdigit() and int(k) >= 1)):
        return "dw", int(k) if star else 1
    raise BitmcuError(f"config key 'model.conv[{i}]': {st!r} is not allowed; use "
                      f"{choices(CONV_STAGES)} (K a whole number >= 1)")


def cnn_shapes(cfg: Config) -> list[int]:
    """Feature map side after the first convolution and after each stage; errors name the stage.

    >>> from bitmcu.config import Config, ModelConfig
    >>> cnn_shapes(Config(model=ModelConfig(family="cnn")))
    [14, 12, 6, 4, 2]
    """
    m = cfg.model
    if m.channels < 1:
        raise BitmcuError(f"config key 'model.channels': {m.channels} must be >= 1")
    if len(m.conv) >= MAX_FRONT:
        raise BitmcuError(f"config key 'model.conv': {len(m.conv)} stages; the engine runs at most "
                          f"{MAX_FRONT - 1} after the first convolution")
    side = cfg.data.size - 2
    sides = [side]
    if side < 1:
        raise BitmcuError(f"model.family cnn: a {cfg.data.size}x{cfg.data.size} input is too small "
                          "for a 3x3 convolution")
    for i, st in enumerate(m.conv):
        op, _ = cnn_stage(st, i)
        new = side - 2 if op == "dw" else side // 2
        if new < 1 or (op == "pool" and side % 2):
            raise BitmcuError(
                f"config key 'model.conv[{i}]': {st!r} cannot be applied to a {side}x{side} "
                f"feature map (stages {m.conv} on a {cfg.data.size}x{cfg.data.size} input)")
        side = new
        sides.append(side)
    return sides


def cnn_channels(cfg: Config) -> list[int]:
    """Channels after the first convolution and after each stage (``dw*K`` multiplies them).

    >>> from bitmcu.config import Config, ModelConfig
    >>> cnn_channels(Config(model=ModelConfig(family="cnn", channels=8,
    ...                                       conv=["dw", "pool", "dw*2", "pool"])))
    [8, 8, 8, 16, 16]
    """
    chans = [cfg.model.channels]
    for i, st in enumerate(cfg.model.conv):
        chans.append(chans[-1] * cnn_stage(st, i)[1])
    return chans


ACT_MAX = 255  # activations between integer conv layers: uint8


class _Requant(torch.autograd.Function):
    """requant's value and straight-through gradient in one pass each way (the composed version
    took eight elementwise passes forward)."""

    @staticmethod
    def forward(ctx, acc, shift: int, act_max: int):
        inv = 1.0 / (1 << shift)  # a power of two: every step below is exact on integers
        ctx.inv = inv
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(acc > 0)
        return ((acc + ((1 << shift) >> 1)) * inv).floor_().clamp_(0, act_max)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        return grad * positive * ctx.inv, None, None


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, grad):
        return grad


def requant(acc: torch.Tensor, shift: int, act_max: int = ACT_MAX) -> torch.Tensor:
    """ReLU, then (v + 2^(s-1)) >> s clamped to act_max, on integer-valued tensors, with the
    straight-through estimator (backward: relu(v) / 2^s). The engine's rounding rule.
    (A negative v needs no ReLU: (v + 2^(s-1)) / 2^s < 1/2 floors to at most 0.)"""
    return _Requant.apply(acc, shift, act_max)


class MaxPool2x2(nn.MaxPool2d):
    """2x2 max-pool, stride 2; without gradients as the maximum of four strided views, several
    times faster on CPU than max_pool2d (teachers, evaluation). The same values either way."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class QuantConv2d(QuantWeights, nn.Conv2d):
    """3x3 convolution (first: 1 -> C, or depthwise) computed exactly in integers.

    Input: integer-valued activations (pixels 0..255 for the first layer). The weights are the
    scheme's integer levels (straight-through estimator), the accumulators exact integers, and
    the output is requantized to uint8 by a fixed per-layer shift (``shift``), calibrated on
    training images until the clipping freezes. The integer engine computes the same numbers.
    With the float scheme ``none`` the layer is an ordinary float convolution (teachers).
    """

    def __init__(self, c_in: int, c_out: int, scheme: str, groups: int = 1,
                 clip_method: str = "octav", clip_std: float = 2.5):
        nn.Conv2d.__init__(self, c_in, c_out, 3, groups=groups, bias=False)
        if get_scheme(scheme).exportable:
            self.register_buffer("shift", torch.zeros((), dtype=torch.int64))
        self._init_quant(scheme, c_out, clip_method=clip_method, clip_std=clip_std)

    @property
    def integer(self) -> bool:
        return self.scheme.exportable

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """Exact integer accumulators of the convolution (float tensor holding integers)."""
        w = self.latent_weight()
        units = w / self.step()
        if self.quantize:
            q = self.scheme.quantize_int(units.detach(), torch.ones((), device=w.device))
            units = units + (q - units).detach()
        w_ste = units.view_as(self.weight)
        acc = self._conv_forward(x, w_ste, None)
        return _RoundSTE.apply(acc)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Smallest shift that brings the largest accumulator on ``x`` into uint8 range."""
        m = int(self.accumulate(x).max().clamp_min(0).item())
        s = 0
        while (m >> s) > ACT_MAX:
            s += 1
        self.shift.fill_(s)

    def forward(self, x):
        if not self.integer:
            return torch.relu(self._conv_forward(x, self.weight, None))
        return requant(self.accumulate(x), self.shift_value())

    def shift_value(self) -> int:
        """``shift`` as a Python int, read from the buffer only when it changed (calibration,
        loading, a move to another device): reading a GPU tensor waits for the GPU."""
        t = self.shift
        if t.is_inference():  # made under torch.inference_mode(): no version counter to watch
            return int(t)
        seen = self.__dict__.get("_shift_seen")
        if seen is None or seen[0] is not t or seen[1] != t._version:
            self.__dict__["_shift_seen"] = (t, t._version, int(t))
        return self.__dict__["_shift_seen"][2]


class CNNModel(nn.Module):
    """3x3 conv 1 -> C, then per channel depthwise 3x3 convs and 2x2 max-pools (no padding,
    ReLU after each conv), flatten, then the fully connected head of :class:`FCModel`. A
    ``dw*K`` stage gives each channel K output channels (a depth multiplier; PyTorch's grouped
    convolution order: output k reads input k // K).

    With quantized conv weights the convolutional front end is exact integer arithmetic on the
    raw pixels (see :class:`QuantConv2d`); with ``conv_scheme: none`` it is a float network.
    """

    def __init__(self, cfg: Config, n_classes: int):
        super().__init__()
        m = cfg.model
        sides = cnn_shapes(cfg)
        cs = m.conv_scheme or m.scheme
        clip = {"clip_method": m.clip, "clip_std": m.clip_std}
        chans = cnn_channels(cfg)
        self.conv1 = QuantConv2d(1, m.channels, cs, **clip)
        self.stages = nn.ModuleList()
        for i, st in enumerate(m.conv):
            c_in, c_out = chans[i], chans[i + 1]
            self.stages.append(QuantConv2d(c_in, c_out, cs, groups=c_in, **clip)
                               if cnn_stage(st, i)[0] == "dw" else MaxPool2x2())
        self.n_features = chans[-1] * sides[-1] * sides[-1]
        self.head = FCModel(cfg, n_classes, n_in=self.n_features)

    def features(self, x: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1]).float()
        if not self.conv1.integer:
            x = x / 255.0
        for layer in [self.conv1, *self.stages]:
            if calibrate and isinstance(layer, QuantConv2d) and layer.integer:
                layer.calibrate(x)
            x = layer(x)
        return x.flatten(1)

    def forward(self, x):
        return self.head(self.features(x), scaled=True)

    @property
    def layers(self):
        return self.head.layers

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, layer) of every layer with weights: the convolutions, then the head's."""
        convs = [self.conv1, *(s for s in self.stages if isinstance(s, QuantConv2d))]
        names = ["conv1", *(f"dw{i}" for i in range(1, len(convs)))]
        return [*zip(names, convs, strict=True), *self.head.weight_layers()]

    def update_clips(self, calib: torch.Tensor | None = None) -> None:
        for layer in [self.conv1, *self.stages]:
            if isinstance(layer, QuantConv2d):
                layer.update_clip()
        if calib is not None:
            with torch.no_grad():
                self.features(calib, calibrate=True)
        self.head.update_clips()


CONVNET_STAGES = ("conv", "pool")


def convnet_shapes(cfg: Config) -> list[tuple[int, int]]:
    """(channels, side) after each stage of a ``convnet``; errors name the stage.

    Every ``conv`` keeps the side (padding 1); every ``pool`` halves it and doubles the width of
    the convolutions after it.

    >>> from bitmcu.config import Config, ModelConfig
    >>> convnet_shapes(Config(model=ModelConfig(family="convnet", channels=8,
    ...                                         conv=["conv", "pool", "conv", "pool"])))
    [(8, 16), (8, 8), (16, 8), (16, 4)]
    """
    m = cfg.model
    if m.channels < 1:
        raise BitmcuError(f"config key 'model.channels': {m.channels} must be >= 1")
    width, channels, side, shapes = m.channels, 1, cfg.data.size, []
    for i, st in enumerate(m.conv):
        if st not in CONVNET_STAGES:
            raise BitmcuError(f"config key 'model.conv[{i}]': {st!r} is not allowed with "
                              f"model.family convnet; use {choices(CONVNET_STAGES)}")
        if st == "pool":
            if side < 2 or side % 2:
                raise BitmcuError(f"config key 'model.conv[{i}]': 'pool' cannot be applied to a "
                                  f"{side}x{side} feature map (stages {m.conv} on a "
                                  f"{cfg.data.size}x{cfg.data.size} input)")
            side, width = side // 2, width * 2
        else:
            channels = width
        shapes.append((channels, side))
    return shapes


class ConvNetModel(nn.Module):
    """A float teacher: 3x3 convolutions across all channels (padding 1, batch norm, ReLU) and
    2x2 max-pools, then the fully connected head of :class:`FCModel`.

    Its convolutions mix channels, which the deployable ``cnn`` family cannot afford in 2-4 KB of
    RAM; it is trained only to teach such models (``train.teacher``) and cannot be exported.
    """

    def __init__(self, cfg: Config, n_classes: int):
        super().__init__()
        shapes = [(1, cfg.data.size), *convnet_shapes(cfg)]  # (channels, side) in and out
        layers = []
        for st, (c_in, _), (c, _) in zip(cfg.model.conv, shapes, shapes[1:], strict=False):
            layers += ([nn.MaxPool2d(2)] if st == "pool" else
                       [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()])
        self.body = nn.Sequential(*layers)
        c, side = shapes[-1]
        self.n_features = c * side * side
        self.head = FCModel(cfg, n_classes, n_in=self.n_features)

    def forward(self, x):
        x = x.reshape(x.shape[0], 1, x.shape[-2], x.shape[-1]).float() / 255.0
        return self.head(self.body(x).flatten(1), scaled=True)

    @property
    def layers(self):
        return self.head.layers

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        convs = [L for L in self.body if isinstance(L, nn.Conv2d)]
        return [*((f"conv{i + 1}", L) for i, L in enumerate(convs)), *self.head.weight_layers()]

    def update_clips(self, calib: torch.Tensor | None = None) -> None:
        self.head.update_clips()


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    if cfg.model.family == "fc":
        return FCModel(cfg, n_classes)
    if cfg.model.family == "cnn":
        return CNNModel(cfg, n_classes)
    if cfg.model.family == "convnet":
        return ConvNetModel(cfg, n_classes)
    raise ValueError(cfg.model.family)  # config validation rejects other families first
