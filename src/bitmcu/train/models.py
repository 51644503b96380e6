"""Model families. A model is rebuilt from its config alone (checkpoints carry the config)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..core.errors import BitmcuError
from ..core.rng import LATENT_UNIT
from ..deploy.ir import CLASS_VALUE
from ..quant import get_scheme
from .config import Config
from .nn import QuantLinear, QuantWeights, act_fake_quant, make_norm
from .shapes import cnn_channels, cnn_shapes, cnn_stage, convnet_shapes, decoder_shapes, decoder_stage


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


ACT_MAX = 255  # activations between integer conv layers: uint8


class _Requant(torch.autograd.Function):
    """requant's value and straight-through gradient in one pass each way (the composed version
    took eight elementwise passes forward)."""

    @staticmethod
    def forward(ctx, acc, shift: int, act_max: int, through: bool = False):
        inv = 1.0 / (1 << shift)  # a power of two: every step below is exact on integers
        ctx.inv = inv
        ctx.through = through
        if ctx.needs_input_grad[0] and not through:
            ctx.save_for_backward(acc > 0)
        return ((acc + ((1 << shift) >> 1)) * inv).floor_().clamp_(0, act_max)

    @staticmethod
    def backward(ctx, grad):
        if ctx.through:
            return grad * ctx.inv, None, None, None
        (positive,) = ctx.saved_tensors
        return grad * positive * ctx.inv, None, None, None


class _RequantBias(torch.autograd.Function):
    """A decoder layer's output: clamp(((acc + 2^(s-1)) >> s) + bias, 0, act_max) with int8
    biases in output units; straight-through gradients where the output is strictly between 0
    and act_max (with ``through``: everywhere, for the pixels). Passing gradients through the
    top of the clamp let the weights grow into saturation: 21% of a hidden layer's outputs at
    255 and a test error that rose from 0.0128 to 0.0169 within one epoch (MNIST decoder,
    benchmarks/RESULTS.md)."""

    @staticmethod
    def forward(ctx, acc, bias, shift: int, act_max: int, through: bool):
        inv = 1.0 / (1 << shift)  # a power of two: exact on integers
        v = ((acc + ((1 << shift) >> 1)) * inv).floor_() + bias
        ctx.inv = inv
        ctx.save_for_backward(torch.ones_like(v, dtype=torch.bool) if through
                              else (v > 0) & (v < act_max))
        ctx.dims = [d for d in range(v.dim()) if d != 1]
        return v.clamp_(0, act_max)

    @staticmethod
    def backward(ctx, grad):
        (live,) = ctx.saved_tensors
        g = grad * live
        return g * ctx.inv, g.sum(dim=ctx.dims, keepdim=True), None, None, None


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, grad):
        return grad


def requant(acc: torch.Tensor, shift: int, act_max: int = ACT_MAX,
            through: bool = False) -> torch.Tensor:
    """ReLU, then (v + 2^(s-1)) >> s clamped to act_max, on integer-valued tensors, with the
    straight-through estimator (backward: relu(v) / 2^s; with ``through`` v / 2^s everywhere,
    so that an output stuck at 0 or at act_max still learns). The engine's rounding rule.
    (A negative v needs no ReLU: (v + 2^(s-1)) / 2^s < 1/2 floors to at most 0.)"""
    return _Requant.apply(acc, shift, act_max, through)


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


class IntegerLayer(QuantWeights):
    """A layer computed exactly in integers: the scheme's integer levels (straight-through
    estimator) times integer-valued inputs give exact integer accumulators, requantized to
    0..255 by a fixed shift (``shift``) calibrated on training data until the clipping freezes.
    The integer engine computes the same numbers. Subclasses give ``_integer_op(x, w)``."""

    def _init_integer(self, scheme: str, n_out: int, clip_method: str, clip_std: float) -> None:
        if get_scheme(scheme).exportable:
            self.register_buffer("shift", torch.zeros((), dtype=torch.int64))
        self._init_quant(scheme, n_out, clip_method=clip_method, clip_std=clip_std)

    @property
    def integer(self) -> bool:
        return self.scheme.exportable

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """Exact integer accumulators of the layer (float tensor holding integers)."""
        w = self.latent_weight()
        units = w / self.step()
        if self.quantize:
            q = self.scheme.quantize_int(units.detach(), torch.ones((), device=w.device))
            units = units + (q - units).detach()
        return _RoundSTE.apply(self._integer_op(x, units.view_as(self.weight)))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, quantile: float | None = None,
                  headroom: int = 0) -> None:
        """Smallest shift that brings the largest accumulator on ``x`` (or its ``quantile``:
        the few above it saturate) into uint8 range, plus ``headroom`` bits (the weights keep
        growing until the next calibration)."""
        acc = self.accumulate(x)
        top = acc.max() if quantile is None else torch.quantile(
            acc.flatten()[:: max(1, acc.numel() // 1_000_000)].float(), quantile)
        m = int(top.clamp_min(0).item())
        s = 0
        while (m >> s) > ACT_MAX:
            s += 1
        self.shift.fill_(s + headroom)

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


class QuantConv2d(IntegerLayer, nn.Conv2d):
    """3x3 convolution computed exactly in integers (see :class:`IntegerLayer`): the first
    (1 -> C) and depthwise convolutions of a cnn (no padding), a decoder's stages (padding 1).

    Input: integer-valued activations (pixels 0..255 for the first layer). With the float
    scheme ``none`` the layer is an ordinary float convolution (teachers).
    """

    def __init__(self, c_in: int, c_out: int, scheme: str, groups: int = 1,
                 clip_method: str = "octav", clip_std: float = 2.5, padding: int = 0):
        nn.Conv2d.__init__(self, c_in, c_out, 3, groups=groups, bias=False, padding=padding)
        self._init_integer(scheme, c_out, clip_method, clip_std)

    def _integer_op(self, x, w):
        return self._conv_forward(x, w, None)

    def forward(self, x):
        if not self.integer:
            return torch.relu(self._conv_forward(x, self.weight, None))
        return requant(self.accumulate(x), self.shift_value())


def int8_bias(b: torch.Tensor) -> torch.Tensor:
    """Float biases -> their int8 values in output units (round, clamp), straight-through."""
    q = b.clamp(-128, 127)
    return q + (q.round() - q).detach()


def integer_biases(biases) -> list:
    """Bias parameters (in BIAS_SCALE units) -> their int8 values (numpy), as the integer engine
    adds them."""
    return [int8_bias(b * BIAS_SCALE).to(torch.int8).cpu().numpy() for b in biases]


def bias_view(b: torch.Tensor, dim: int) -> torch.Tensor:
    """Biases (n_out,) shaped to add along dim 1 of a (B, n_out, ...) tensor of `dim` dims."""
    return b.reshape(1, -1, *([1] * (dim - 2)))


class IntLinear(IntegerLayer, nn.Linear):
    """Fully connected layer computed exactly in integers (see :class:`IntegerLayer`): a
    decoder's fc layers, whose fixed shifts keep the absolute scale an image needs."""

    def __init__(self, n_in: int, n_out: int, scheme: str, clip_method: str = "octav",
                 clip_std: float = 2.5):
        nn.Linear.__init__(self, n_in, n_out, bias=False)
        self._init_integer(scheme, n_out, clip_method, clip_std)

    def _integer_op(self, x, w):
        return nn.functional.linear(x, w)


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


# ------------------------------------------------------------------------------ decoder

BIAS_SCALE = 32.0  # output units per unit of a decoder bias parameter (Adam moves it as fast
#                    as a weight)


def latent_input(z: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The first fc layer's input: [relu(z), relu(-z), one-hot(class) * CLASS_VALUE], z in
    integer latent units. Unsigned, as every activation of the engine; the two signs have
    their own weight columns, and each class its own column (its bias)."""
    onehot = nn.functional.one_hot(y, n_classes).to(z.dtype) * CLASS_VALUE
    return torch.cat([torch.relu(z), torch.relu(-z), onehot], dim=1)


def quantize_latent(z: torch.Tensor) -> torch.Tensor:
    """Float z -> its integer latent units (round, clamp to int8's -127..127), STE."""
    q = (z * LATENT_UNIT).clamp(-127, 127)
    return q + (q.round() - q).detach()


class DecoderModel(nn.Module):
    """Conditional decoder: (latent z, class) -> image, exact integer arithmetic throughout.

    fc layers (:class:`IntLinear`, fixed-shift requantization plus an int8 bias per output,
    ReLU) from
    :func:`latent_input` to the first map (channels x start x start, or the image itself
    without stages), then :func:`decoder_stage` convolutions at growing resolution; the last
    one's requantization is the output function (pixels 0..255). A float encoder (training
    only, never exported) makes it a conditional VAE: image + class -> mean and log-variance.
    """

    def __init__(self, cfg: Config, n_classes: int):
        super().__init__()
        m = cfg.model
        self.n_classes, self.latent, self.size = n_classes, m.latent, cfg.data.size
        shapes = decoder_shapes(cfg)
        self.shapes = shapes
        c0, s0 = shapes[0]
        widths = [2 * m.latent + n_classes, *m.hidden, c0 * s0 * s0]
        schemes = cfg.layer_scheme_names(cfg.n_weight_layers())
        clip = {"clip_method": m.clip, "clip_std": m.clip_std}
        self.fcs = nn.ModuleList(IntLinear(a, b, s, **clip) for a, b, s in
                                 zip(widths[:-1], widths[1:], schemes, strict=False))
        self.factors = [decoder_stage(st, i)[0] for i, st in enumerate(m.conv)]
        self.stages = nn.ModuleList(
            QuantConv2d(c_in, c_out * f * f, s, padding=1, **clip)
            for (c_in, _), (c_out, _), f, s in zip(shapes[:-1], shapes[1:], self.factors,
                                                   schemes[len(self.fcs):], strict=True))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(L.weight.shape[0]))
                                       for L in [*self.fcs, *self.stages])
        for L in [*self.fcs, *self.stages]:
            if not L.integer:
                raise BitmcuError(f"model.family decoder: every layer is integer arithmetic; "
                                  f"scheme {L.scheme.name!r} is float, use a quantized scheme")
        # the output's shift is calibrated once, at the start: its weights then learn the
        # brightness (recalibrating by the brightest pixel would pin it down)
        self.register_buffer("output_calibrated", torch.zeros((), dtype=torch.bool))
        # shifts: the largest accumulator on the calibration images plus one bit of headroom.
        # Saturation at 255 between calibrations was the integer decoder's main loss (measured:
        # test error 0.041 -> 0.035 per pixel on 10,000 dice in 3 epochs, benchmarks/RESULTS.md)
        self.calib_quantile = None
        self.headroom = 1
        n_pix = cfg.data.size * cfg.data.size
        # train.objective factors gives each image's latent: no encoder to train
        self.encoder = None if cfg.train.objective == "factors" else nn.Sequential(
            nn.Linear(n_pix + n_classes, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, 2 * m.latent))

    @property
    def layers(self):
        return [*self.fcs, *self.stages]

    @torch.no_grad()
    def integer_biases(self) -> list:
        """Each layer's int8 biases (numpy), as the integer engine adds them."""
        return integer_biases(self.biases)

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        return [*((f"fc{i}", L) for i, L in enumerate(self.fcs)),
                *((f"up{i}" if f == 2 else f"conv{i}", L)
                  for i, (L, f) in enumerate(zip(self.stages, self.factors, strict=True)))]

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, S, S) 0..255 and classes -> latent mean and log-variance (B, latent)."""
        if self.encoder is None:
            raise BitmcuError("this decoder was trained on the renderer's factors "
                              "(train.objective factors): it has no encoder")
        h = torch.cat([x.reshape(len(x), -1).float() / 255.0,
                       nn.functional.one_hot(y, self.n_classes).float()], dim=1)
        mu, logvar = self.encoder(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 6)

    def decode(self, zq: torch.Tensor, y: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
        """Integer latent (B, latent) in latent units and classes -> pixels (B, S, S), 0..255."""
        a = latent_input(zq, y, self.n_classes)
        layers = self.layers
        for i, L in enumerate(layers):
            if i == len(self.fcs):
                c0, s0 = self.shapes[0]
                a = a.reshape(len(a), c0, s0, s0)
            if calibrate and (i < len(layers) - 1 or not self.output_calibrated):
                L.calibrate(a, self.calib_quantile, self.headroom)
            acc = L.accumulate(a)
            b = bias_view(int8_bias(self.biases[i] * BIAS_SCALE), acc.dim())
            a = _RequantBias.apply(acc, b, L.shift_value(), ACT_MAX, i == len(layers) - 1)
            if i >= len(self.fcs) and self.factors[i - len(self.fcs)] == 2:
                a = nn.functional.pixel_shuffle(a, 2)
        return a.reshape(len(a), self.size, self.size)

    def forward(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None,
                noise: bool = True):
        """Autoencoder pass: (reconstruction (B, S, S), mu, logvar); the latent is drawn from
        the encoder's posterior (CVAE), or with ``noise`` False is its mean (WAE)."""
        mu, logvar = self.encode(x, y)
        if not noise:
            return self.decode(quantize_latent(mu), y), mu, logvar
        eps = torch.randn(mu.shape, generator=gen).to(mu.device) if gen is not None else \
            torch.randn_like(mu)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(quantize_latent(z), y), mu, logvar

    def update_clips(self, calib: tuple | None = None) -> None:
        for L in self.layers:
            L.update_clip()
        if calib is not None:  # (images, classes) or (images, classes, their given latents)
            x, y, *given = calib
            with torch.no_grad():
                mu = given[0] if given else self.encode(x, y)[0]
                self.decode(quantize_latent(mu), y, calibrate=True)
                self.output_calibrated.fill_(True)


# ------------------------------------------------------------------------------ characters

EMBED_SCALE = 32.0  # activation units per unit of an embedding parameter (as BIAS_SCALE)


class CharModel(nn.Module):
    """Character model: token -> embedding -> recurrent cells -> logits, one token at a time,
    exact integer arithmetic throughout (the engine's ops embed, cell and the logits fc; their
    equations in deploy/ops.py).

    The embedding is a table of activations 0..act_max (one row per token); each cell is an
    :class:`IntLinear` over [its input, its own last output] requantized by a fixed shift plus
    int8 biases (an Elman cell with a clamped ReLU: the decoder's layer function); the logits
    are the accumulators of an :class:`IntLinear` over the last cell's output, times a learned
    scale into nats (``log_scale``: the sampler's exp table is built from it at export).
    ``vocab`` holds the token's characters (code points), so a checkpoint decodes its tokens.

    With a float scheme (``none``) on every layer it is the float twin of the same size: the
    same cells on values in [0, 1] (float weights and biases, clamp to [0, 1])."""

    def __init__(self, cfg: Config, n_tokens: int):
        super().__init__()
        m = cfg.model
        self.n_tokens, self.act_max = n_tokens, ACT_MAX
        schemes = cfg.layer_scheme_names(cfg.n_weight_layers())
        kinds = {get_scheme(s).exportable for s in schemes}
        if len(kinds) > 1:
            raise BitmcuError(f"model.family charrnn: layers {schemes} mix float and quantized "
                              "schemes; use quantized schemes (the integer model) or none on "
                              "every layer (its float twin)")
        self.integer = kinds.pop()
        clip = {"clip_method": m.clip, "clip_std": m.clip_std}
        widths = [m.embed, *m.hidden]
        # activations 0..128 (in [0, 0.5] for the float twin)
        self.embed = nn.Parameter(torch.rand(n_tokens, m.embed) * (4 if self.integer else 0.5))
        if self.integer:
            self.cells = nn.ModuleList(IntLinear(a + b, b, s, **clip) for a, b, s in
                                       zip(widths[:-1], widths[1:], schemes, strict=False))
            self.out = IntLinear(widths[-1], n_tokens, schemes[-1], **clip)
        else:
            self.cells = nn.ModuleList(nn.Linear(a + b, b, bias=False)
                                       for a, b in zip(widths[:-1], widths[1:], strict=True))
            self.out = nn.Linear(widths[-1], n_tokens, bias=False)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in m.hidden)
        self.log_scale = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("vocab", torch.zeros(n_tokens, dtype=torch.int32))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        # each cell's shift: its accumulators' 0.99 quantile to act_max, recalibrated every
        # epoch (clip_until): the state then spans its 8 bits. Calibrated once by the largest
        # accumulator plus a bit of headroom (the decoder's rule), the trained cells' outputs
        # used 5 of them (mean 6, 99th percentile 35 of 255) and the validation bpc was 0.9%
        # worse (3.253 against 3.223, 6 epochs; benchmarks/RESULTS.md)
        self.calib_quantile = 0.99
        self.headroom = 0

    @property
    def layers(self):
        return [*self.cells, self.out]

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        return [*((f"cell{i}", L) for i, L in enumerate(self.cells)), ("logits", self.out)]

    def set_vocab(self, vocab: str) -> None:
        self.vocab.copy_(torch.tensor([ord(c) for c in vocab], dtype=torch.int32))

    def vocab_text(self) -> str:
        return "".join(chr(int(c)) for c in self.vocab)

    def embedding(self) -> torch.Tensor:
        """(n_tokens, embed) the embedding table: integer activations (round, clamp, STE)."""
        if not self.integer:
            return self.embed.clamp(0, 1)
        q = (self.embed * EMBED_SCALE).clamp(0, self.act_max)
        return q + (q.round() - q).detach()

    @torch.no_grad()
    def integer_embedding(self) -> np.ndarray:
        return self.embedding().round().to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def integer_biases(self) -> list:
        """Each cell's int8 biases (numpy), as the integer engine adds them."""
        return integer_biases(self.biases)

    def begin(self, batch: int, device=None) -> list[torch.Tensor]:
        """Every cell's state before a line: zeros."""
        return [torch.zeros(batch, L.weight.shape[0], device=device) for L in self.cells]

    def step(self, tokens: torch.Tensor, state: list[torch.Tensor],
             calib: list | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One token per line (B,) and the cells' states -> (the next token's logits in nats
        (B, n_tokens), the new states). ``calib``: collects each cell's inputs."""
        a = self.embedding()[tokens]
        new = []
        for i, (L, h) in enumerate(zip(self.cells, state, strict=True)):
            x = torch.cat([a, h], dim=1)
            if calib is not None:
                calib[i].append(x.detach())
            if self.integer:
                b = int8_bias(self.biases[i] * BIAS_SCALE).unsqueeze(0)
                a = _RequantBias.apply(L.accumulate(x), b, L.shift_value(), self.act_max, False)
            else:
                a = (L(x) + self.biases[i]).clamp(0, 1)
            new.append(a)
        if calib is not None:
            calib[-1].append(a.detach())
        acc = self.out.accumulate(a) if self.integer else self.out(a)
        return acc * self.log_scale.exp(), new

    def forward(self, tokens: torch.Tensor, calib: list | None = None) -> torch.Tensor:
        """Teacher forcing: (B, T) tokens -> (B, T, n_tokens) logits of the token after each."""
        state = self.begin(len(tokens), tokens.device)
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], state, calib)
            out.append(logits)
        return torch.stack(out, dim=1)

    def update_clips(self, calib: torch.Tensor | None = None) -> None:
        """Clipping ranges; with ``calib`` ((B, T) tokens; the first epochs) each cell's shift,
        from the accumulators of the inputs it meets (three passes: a cell's own outputs are
        among its inputs), and the logits' scale (their standard deviation to 1 nat)."""
        for L in self.layers:
            if isinstance(L, QuantWeights):
                L.update_clip()
        if calib is None or not self.integer:
            return
        with torch.no_grad():
            for _ in range(3):
                seen = [[] for _ in range(len(self.cells) + 1)]
                self.forward(calib, seen)
                for L, xs in zip(self.cells, seen, strict=False):
                    L.calibrate(torch.cat(xs), self.calib_quantile, self.headroom)
            acc = self.out.accumulate(torch.cat(seen[-1]))
            if not bool(self.calibrated):
                self.log_scale.fill_(-float(acc.std().clamp_min(1.0).log()))
                self.calibrated.fill_(True)


def build_model(cfg: Config, n_classes: int) -> nn.Module:
    if cfg.model.family == "charrnn":
        return CharModel(cfg, n_classes)
    if cfg.model.family == "decoder":
        return DecoderModel(cfg, n_classes)
    if cfg.model.family == "fc":
        return FCModel(cfg, n_classes)
    if cfg.model.family == "cnn":
        return CNNModel(cfg, n_classes)
    if cfg.model.family == "convnet":
        return ConvNetModel(cfg, n_classes)
    raise ValueError(cfg.model.family)  # config validation rejects other families first
