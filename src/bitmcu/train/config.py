"""Run configuration: dataclasses, YAML loading, ``--set key=value`` overrides and validation.

Every key is checked: an unknown key, a value of the wrong type or a value outside the allowed set
raises :class:`BitmcuError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from ..core.errors import BitmcuError, choices
from ..data.dice import DiceConfig, check_config
from ..data.text import TEXT_DATASETS, is_text_dataset
from ..quant import get_scheme
from .shapes import cnn_shapes, convnet_shapes, decoder_shapes


@dataclass
class DataConfig:
    dataset: str = "mnist"  # mnist | fashion-mnist | emnist-<split> | dice | path/to/file.npz
    data_dir: str | None = None  # folder with one subfolder per data set; else $BITMCU_DATA, cache
    size: int = 16  # side of the square input image the model sees (and the chip samples)
    context: int = 16  # text: tokens per line at most, its end-of-line token included
    resize: Literal["area", "bilinear"] = "area"  # downscale filter (both antialiased)
    crop: int | None = None  # downscale only the central crop x crop square; None = whole image
    train_limit: int | None = None  # use only the first N training images (quick runs)
    validation: int = 0  # hold out the last N training images and evaluate on them, not on the
    #                      test set (metrics val_acc, val_loss; `bitmcu search` sets 5000)
    dice: DiceConfig = field(default_factory=DiceConfig)  # dataset dice: the renderer's variation

    def input_description(self) -> str:
        """How the images are made, which is how the device must make its images too."""
        source = ("the whole source image" if self.crop is None
                  else f"the central {self.crop}x{self.crop} of the source image")
        return (f"{self.size}x{self.size} uint8 pixels, 0 = background: {self.resize} "
                f"downscaling of {source}")


@dataclass
class AugmentConfig:
    enabled: bool = True
    fraction: float = 0.5  # share of each batch that is augmented; the rest stays clean
    rotation: float = 10.0  # max rotation in degrees
    shear: float = 0.0  # max horizontal shear (slant) in degrees; 0 = off
    translate: float = 0.1  # max shift as a fraction of the image side
    scale: float = 0.1  # max relative zoom in or out
    elastic: float = 0.0  # elastic displacement in pixels of the 28x28 original; 0 = off
    elastic_sigma: float = 4.0  # smoothness of the elastic field in pixels
    until: int | None = None  # augment only in epochs before this one (null: every epoch);
    #                           the last epochs then fit the clean images the model will see


@dataclass
class ModelConfig:
    family: Literal["fc", "cnn", "convnet", "decoder", "charrnn"] = "fc"  # convnet: a float
    #   teacher, not exportable; decoder: conditional generation (latent + class -> image);
    #   charrnn: character generation (embedding, recurrent cells, logits; data: text lines)
    embed: int = 16  # charrnn: embedding width
    latent: int = 16  # decoder: latent size
    start: int = 4  # decoder: side of the first map (the fc layers' output)
    output: Literal["clamp"] = "clamp"  # decoder: pixels = min(255, relu(acc + 2^(s-1)) >> s)
    temperature: float = 1.0  # decoder: latent scale when sampling; charrnn: softmax temperature
    #                          of the sampler (the chip's too)
    prior: Literal["normal", "uniform", "mixture"] = "normal"  # decoder: the latent's prior;
    #   uniform (with train.objective factors): each factor's position in its range, linear,
    #   unit variance; mixture (wae or cvae): trained as normal, then sampled from a per-class
    #   mixture fitted to the encoder's latents of the training images (train/mixture.py)
    mixture: int = 20  # decoder, prior mixture: components per class (1..255)
    channels: int = 16  # cnn: channels of the first 3x3 convolution
    conv: list[str] = field(default_factory=lambda: ["dw", "pool", "dw", "pool"])  # cnn stages
    conv_scheme: str | None = None  # cnn: weight scheme of the convolutions (null: model.scheme)
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # hidden layer widths
    scheme: str = "4bitsym"  # weight scheme of every layer (see `bitmcu schemes`)
    layer_schemes: list[str | None] = field(default_factory=list)  # per-layer override, or null
    norm: Literal["rms", "layer", "batch"] = "rms"  # normalization before each linear layer
    bias: bool = False  # float biases (training only: the integer engine has none)
    bias_unit: bool = False  # append each layer's largest input as one more input: a bias
    #                          that scales with the input, exact in the integer engine
    scale: Literal["per_tensor", "per_channel"] = "per_tensor"  # weight scale granularity
    clip: Literal["octav", "std"] = "octav"  # how the clipping range is chosen
    clip_std: float = 2.5  # with clip=std: clipping range in weight standard deviations
    clip_until: int | None = None  # update clipping (and a decoder's shifts) every epoch until
    #                                this epoch, then freeze; None: 20, for a decoder 1 (a
    #                                decoder's fixed shifts and biases do not survive a
    #                                recalibration late in training), for a charrnn every
    #                                epoch (its cells' shifts)
    quant_from: int = 0  # float weights (no weight quantization) before this epoch
    act_bits: int = 8  # activation fake-quantization bits


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: Literal["cosine", "step", "cosine_restarts", "constant"] = "cosine"
    step_size: int = 10  # schedule=step: epochs per step
    gamma: float = 0.5  # schedule=step: lr factor per step
    restart_period: int = 10  # schedule=cosine_restarts: epochs of the first cycle
    halve_lr_at: int | None = None  # halve the learning rate once at this epoch
    label_smoothing: float = 0.0
    teacher: str | list[str] | None = None  # run dir or checkpoint to distill from, or a list of
    #                                         them (an ensemble: their logits are averaged)
    distill: float = 0.5  # with a teacher: weight of the distillation loss (rest: labels)
    distill_temperature: float = 2.0  # softmax temperature of the distillation loss
    dampen: float = 0.0  # oscillation dampening: weight of mean((w - q(w))^2 / step^2), ramped
    #                      linearly from 0 to this value over training (Nagel et al., 2022)
    ema: float = 0.0  # decay of an exponential moving average of the weights, per step; the
    #                   averaged model is evaluated, checkpointed and exported (0 = off)
    objective: Literal["cvae", "wae", "factors"] = "cvae"  # decoder: cvae (a float encoder
    #   infers each image's latent, KL to the prior), wae (the encoder's mean is the latent, and
    #   a per-class MMD pulls each class's latents to the prior; any data set) or factors
    #   (data.dataset dice only: each image's latent is the
    #   renderer's own parameters, N(0, 1) by construction, and the target is that die drawn
    #   clean: no noise, shear, perspective or background; see data/dice.py)
    pixel_weight: Literal["none", "area"] = "none"  # decoder: each image's share of the pixel
    #   loss; area: the batch's mean lit area over the image's own (0.5..3x), so that a small
    #   picture (a small die) counts as much as a large one
    ghost_weight: float = 0.0  # decoder: weight of a penalty on ghosts, pixels lit (> 40)
    #   where the target is dark within 1 px all round, beside the pixel loss (0 = off)
    ghost_loss: Literal["squared", "linear"] = "squared"  # decoder: how the ghost penalty
    #   grows with a pixel's excess over 40: linear pushes harder on faint ghosts
    dim_weight: float = 0.0  # decoder: weight of a penalty on parts drawn dim, the squared
    #   shortfall under 150 of pixels where the target is bright (>= 160), beside the pixel
    #   loss (0 = off)
    factor_range: float = 1.0  # decoder, objective factors, uniform prior: the middle share of
    #   each factor's range that the training latents come from (the sampler at temperature T
    #   draws from the middle T); an image outside it is replaced by one of the same face inside
    kl_weight: float = 1.0  # decoder (CVAE): weight of the KL term beside the summed squared
    #                         pixel error (pixels 0..1)
    mmd_weight: float = 10.0  # decoder (WAE): weight of the per-class MMD beside that error
    guide: str | None = None  # decoder: a classifier run of the same data; its cross-entropy
    #                           on images sampled from the prior joins the loss (class guidance)
    guide_weight: float = 10.0  # decoder with a guide: weight of that cross-entropy
    adversarial: float = 0.0  # decoder: weight of an adversarial critic's verdict on images
    #   sampled from the prior (train/critic.py: a float network trained beside the decoder on
    #   the training images, never exported; 0 = off)
    sam: float = 0.0  # sharpness-aware minimization: radius rho of the weight perturbation
    #                   (Foret et al., 2021); each step costs a second forward/backward (0 = off)
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch CPU threads (None: torch default)


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Stable short hash of the model-defining part of the config."""
        blob = json.dumps(dataclasses.asdict(self.model), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def clip_epochs(self) -> int:
        """Epochs at whose start clipping ranges (and a decoder's shifts) are recalibrated."""
        if self.model.clip_until is not None:
            return self.model.clip_until
        if self.model.family == "charrnn":
            return self.train.epochs  # every epoch (models.CharModel says why)
        return 1 if self.model.family == "decoder" else 20

    def n_weight_layers(self) -> int:
        """Layers that model.layer_schemes can name: the fc layers, then a decoder's stages."""
        extra = len(self.model.conv) if self.model.family == "decoder" else 0
        return len(self.model.hidden) + 1 + extra

    def layer_scheme_names(self, n_layers: int) -> list[str]:
        over = list(self.model.layer_schemes)
        if len(over) > n_layers:
            raise BitmcuError(
                f"model.layer_schemes has {len(over)} entries but the model has {n_layers} "
                "linear layers; give at most one per layer (null keeps model.scheme)"
            )
        over += [None] * (n_layers - len(over))
        return [s if s is not None else self.model.scheme for s in over]


# --------------------------------------------------------------------------- validation


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return "one of " + choices(get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints become floats for float)."""
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise BitmcuError(f"config key '{key}': {value!r} is not allowed; use {choices(allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except BitmcuError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in args)
        raise BitmcuError(f"config key '{key}': {value!r} is not {names}")
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise BitmcuError(f"config key '{key}': {value!r} is not a list")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise BitmcuError(f"config key '{key}': {value!r} is not true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BitmcuError(f"config key '{key}': {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BitmcuError(f"config key '{key}': {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise BitmcuError(f"config key '{key}': {value!r} is not a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise BitmcuError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BitmcuError(
            f"unknown config key '{prefix}{unknown[0]}'; allowed keys here: "
            + ", ".join(prefix + k for k in fields)
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


# Keys that only some model families read (every other key applies to each family).
FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "model.channels": ("cnn", "convnet", "decoder"),
    "model.conv": ("cnn", "convnet", "decoder"),
    "model.conv_scheme": ("cnn", "convnet"),
    "model.latent": ("decoder",),
    "model.start": ("decoder",),
    "model.output": ("decoder",),
    "model.temperature": ("decoder", "charrnn"),
    "train.objective": ("decoder",),
    "train.kl_weight": ("decoder",),
    "train.mmd_weight": ("decoder",),
    "train.pixel_weight": ("decoder",),
    "train.factor_range": ("decoder",),
    "train.ghost_weight": ("decoder",),
    "train.dim_weight": ("decoder",),
    "train.ghost_loss": ("decoder",),
    "model.prior": ("decoder",),
    "model.mixture": ("decoder",),
    "train.guide": ("decoder",),
    "train.guide_weight": ("decoder",),
    "train.adversarial": ("decoder",),
}

MAX_THREADS = 1024  # torch CPU threads: far more crash the process (100,000 segfaulted)

# numbers that must not be negative (beyond those checked with their own range below)
NON_NEGATIVE = ("data.train_limit", "data.validation", "augment.translate", "augment.rotation",
                "augment.scale", "augment.elastic", "model.clip_std", "train.gamma", "train.weight_decay",
                "train.label_smoothing", "train.kl_weight", "train.mmd_weight",
                "train.adversarial", "train.ghost_weight", "train.dim_weight")


def _walk(obj, prefix: str = ""):
    """(key, value) of every leaf of a config."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _walk(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config dict (Config.to_dict) as {dotted key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def differences(a: dict, b: dict, ignore=()) -> list[tuple[str, Any, Any]]:
    """(key, a's value, b's value) of each dotted key, but ``ignore``, whose values differ
    between two config dicts (Config.to_dict), sorted by key."""
    fa, fb = _flat(a), _flat(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys())
            if k not in ignore and fa.get(k) != fb.get(k)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    one silently, so a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise BitmcuError(f"key {key!r} appears twice in one mapping (lines "
                                  f"{seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  "give each key once")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "config") -> Any:
    """The YAML document in ``path``; one error naming the file for bad YAML or a key given
    twice in one mapping."""
    try:
        return yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)
    except BitmcuError as e:
        raise BitmcuError(f"{what} {path}: {e}") from None
    except yaml.YAMLError as e:
        raise BitmcuError(f"{what} {path}: not valid YAML ({e})") from None
    except UnicodeDecodeError:
        raise BitmcuError(f"{what} {path}: not a text file (YAML is UTF-8 text)") from None


def _check(cfg: Config) -> Config:
    """Semantic checks beyond types, section by section; each error names the key."""
    _check_values(cfg)
    _check_model(cfg)
    _check_data(cfg)
    _check_train(cfg)
    _check_family_keys(cfg)  # last: a key's own check says more (train.guide on a classifier)
    return cfg


def _check_family_keys(cfg: Config) -> None:
    """A key that the run's model family does not read, set away from its default, is refused:
    it would change nothing (a decoder's loss weight on a classifier, say)."""
    default = dict(_walk(Config()))
    for key, value in _walk(cfg):
        users = FAMILY_KEYS.get(key)
        if users is not None and cfg.model.family not in users and value != default[key]:
            raise BitmcuError(f"config key '{key}': {value!r} is read by model.family "
                              f"{' and '.join(users)} only; this run is {cfg.model.family!r} "
                              "(drop the key)")


def _positive(key: str, v, lo=1) -> None:
    if v < lo:
        raise BitmcuError(f"config key '{key}': {v!r} must be >= {lo}")


def _check_values(cfg: Config) -> None:
    """The run's name, finite numbers, and the keys that must not be negative."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", cfg.name):
        raise BitmcuError(f"config key 'name': {cfg.name!r} is not a name (letters, digits and "
                          "._+- ; a path goes in --out)")
    leaves = dict(_walk(cfg))
    for key, v in leaves.items():
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, float) and not math.isfinite(x):
                raise BitmcuError(f"config key '{key}': {v!r} must be a finite number")
    for key in NON_NEGATIVE:
        v = leaves.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise BitmcuError(f"config key '{key}': {v!r} must be >= 0")


def _check_model(cfg: Config) -> None:
    """Schemes by name, the family's shapes, widths."""
    get_scheme(cfg.model.scheme, key="model.scheme")
    for i, s in enumerate(cfg.model.layer_schemes):
        if s is not None:
            get_scheme(s, key=f"model.layer_schemes[{i}]")
    if cfg.model.conv_scheme is not None:
        get_scheme(cfg.model.conv_scheme, key="model.conv_scheme")
    if cfg.model.family == "cnn":
        cnn_shapes(cfg)  # raises on impossible shapes
    if cfg.model.family == "convnet":
        convnet_shapes(cfg)
        quantized = [s for s in [cfg.model.scheme, cfg.model.conv_scheme,
                                 *cfg.model.layer_schemes] if s not in (None, "none")]
        if quantized:
            raise BitmcuError(f"model.family convnet is a float teacher: its schemes must be "
                              f"'none', not {quantized[0]!r} (set model.scheme=none)")
    if cfg.model.family == "decoder":
        decoder_shapes(cfg)
    if any(h < 1 for h in cfg.model.hidden):
        raise BitmcuError(f"config key 'model.hidden': {cfg.model.hidden} has a width below 1")
    cfg.layer_scheme_names(cfg.n_weight_layers())


def _check_data(cfg: Config) -> None:
    """Image side, crop and limits of the data set (the dice renderer's ranges); text for a
    character model and only for one."""
    text = is_text_dataset(cfg.data.dataset)
    if text != (cfg.model.family == "charrnn"):
        raise BitmcuError(f"config key 'data.dataset': {cfg.data.dataset!r} is "
                          f"{'text' if text else 'images'}; model.family {cfg.model.family!r} "
                          f"takes {'images' if text else 'text'} (text: charrnn with "
                          f"{', '.join(TEXT_DATASETS)} or a .txt file)")
    if text:
        if not 2 <= cfg.data.context <= 255:
            raise BitmcuError(f"config key 'data.context': {cfg.data.context} must be 2..255 "
                              "tokens (a line's characters and its end)")
        if cfg.model.temperature <= 0:
            raise BitmcuError(f"config key 'model.temperature': {cfg.model.temperature} must "
                              "be > 0")
        _positive("model.embed", cfg.model.embed)
        if not cfg.model.hidden:
            raise BitmcuError("config key 'model.hidden': a charrnn needs at least one cell "
                              "width")
        if cfg.data.train_limit is not None:
            _positive("data.train_limit", cfg.data.train_limit)
        return
    _positive("data.size", cfg.data.size, 4)
    if cfg.data.dataset == "dice":
        check_config(cfg.data.dice)
        if cfg.data.size > 64:
            raise BitmcuError(f"config key 'data.size': {cfg.data.size}: the dice renderer draws "
                              "4..64 pixels per side")
    elif cfg.data.size > 28:
        raise BitmcuError(f"config key 'data.size': {cfg.data.size} is larger than the 28x28 source")
    if cfg.data.crop is not None and not cfg.data.size <= cfg.data.crop <= 28:
        raise BitmcuError(f"config key 'data.crop': {cfg.data.crop} is not allowed; use a side "
                          f"from data.size ({cfg.data.size}) to 28, or null for the whole image")
    if cfg.data.train_limit is not None:
        _positive("data.train_limit", cfg.data.train_limit)


def _check_train(cfg: Config) -> None:
    """Training and augmentation keys: ranges, and keys that fit only some families."""
    if cfg.train.threads is not None and not 1 <= cfg.train.threads <= MAX_THREADS:
        raise BitmcuError(f"config key 'train.threads': {cfg.train.threads} must be 1.."
                          f"{MAX_THREADS}, or null for torch's default (this machine has "
                          f"{os.cpu_count()} CPU cores)")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise BitmcuError(f"config key 'train.label_smoothing': {cfg.train.label_smoothing} "
                          "must be in [0, 1)")
    if cfg.augment.elastic_sigma <= 0:
        raise BitmcuError(f"config key 'augment.elastic_sigma': {cfg.augment.elastic_sigma} "
                          "must be > 0 (the smoothness of the elastic field in pixels)")
    _positive("train.epochs", cfg.train.epochs)
    _positive("train.batch_size", cfg.train.batch_size)
    _positive("train.step_size", cfg.train.step_size)
    _positive("train.restart_period", cfg.train.restart_period)
    if not 2 <= cfg.model.act_bits <= 8:
        raise BitmcuError(f"config key 'model.act_bits': {cfg.model.act_bits} must be 2..8")
    if not 0.0 <= cfg.augment.shear <= 45.0:
        raise BitmcuError(f"config key 'augment.shear': {cfg.augment.shear} must be 0..45 degrees")
    if not 0.0 <= cfg.augment.fraction <= 1.0:
        raise BitmcuError(f"config key 'augment.fraction': {cfg.augment.fraction} must be 0..1")
    if cfg.train.teacher == []:
        raise BitmcuError("config key 'train.teacher': [] is empty; give a run, a list of runs, "
                          "or null for no teacher")
    if cfg.train.guide is not None and cfg.model.family != "decoder":
        raise BitmcuError(f"config key 'train.guide': {cfg.train.guide!r} guides a decoder's "
                          f"samples; model.family is {cfg.model.family!r} (use train.teacher to "
                          "distill a classifier)")
    if cfg.train.adversarial > 0 and cfg.model.family != "decoder":
        raise BitmcuError(f"config key 'train.adversarial': {cfg.train.adversarial} judges a "
                          f"decoder's samples; model.family is {cfg.model.family!r} (set "
                          "train.adversarial=0, or model.family=decoder)")
    if cfg.train.objective == "factors" and (cfg.model.family != "decoder"
                                             or cfg.data.dataset != "dice"):
        raise BitmcuError("config key 'train.objective': factors trains a decoder "
                          "(model.family decoder) on the dice renderer's own parameters "
                          f"(data.dataset dice); this run has model.family "
                          f"{cfg.model.family!r}, data.dataset {cfg.data.dataset!r} (use cvae)")
    if cfg.model.prior == "uniform" and cfg.train.objective != "factors":
        raise BitmcuError("config key 'model.prior': uniform is the prior of a decoder trained "
                          "on the renderer's factors (train.objective factors); a CVAE's KL term "
                          "and a WAE's MMD are to a normal prior (use normal)")
    if cfg.model.prior == "mixture" and cfg.train.objective not in ("wae", "cvae"):
        raise BitmcuError("config key 'model.prior': mixture is fitted to an encoder's latents "
                          "(train.objective wae or cvae); this run has train.objective "
                          f"{cfg.train.objective!r} (use normal or uniform)")
    if not 1 <= cfg.model.mixture <= 255:
        raise BitmcuError(f"config key 'model.mixture': {cfg.model.mixture} components per class; "
                          "allowed 1..255")
    if not 0.0 < cfg.train.factor_range <= 1.0:
        raise BitmcuError(f"config key 'train.factor_range': {cfg.train.factor_range} must be in "
                          "(0, 1]: the middle share of each renderer factor's range to train on")
    if cfg.train.factor_range < 1.0 and (cfg.train.objective != "factors"
                                         or cfg.model.prior != "uniform"):
        raise BitmcuError(f"config key 'train.factor_range': {cfg.train.factor_range} narrows the "
                          "renderer's factors that a decoder trains on (train.objective factors, "
                          f"model.prior uniform); this run has train.objective "
                          f"{cfg.train.objective!r}, model.prior {cfg.model.prior!r} (set 1.0)")
    if not 0.0 <= cfg.train.guide_weight < float("inf"):
        raise BitmcuError(f"config key 'train.guide_weight': {cfg.train.guide_weight} must be "
                          ">= 0")
    if not 0.0 <= cfg.train.distill <= 1.0:
        raise BitmcuError(f"config key 'train.distill': {cfg.train.distill} must be 0..1")
    if cfg.train.distill_temperature <= 0:
        raise BitmcuError(
            f"config key 'train.distill_temperature': {cfg.train.distill_temperature} must be > 0"
        )
    if not 0.0 <= cfg.train.ema < 1.0:
        raise BitmcuError(f"config key 'train.ema': {cfg.train.ema} must be in [0, 1)")
    if cfg.augment.until is not None and cfg.augment.until < 0:
        raise BitmcuError(f"config key 'augment.until': {cfg.augment.until} must be >= 0")
    if not 0 <= cfg.model.quant_from < cfg.train.epochs:
        raise BitmcuError(f"config key 'model.quant_from': {cfg.model.quant_from} must be >= 0 "
                          f"and below train.epochs ({cfg.train.epochs}): the delivered model "
                          f"must be trained quantized")
    if cfg.train.sam < 0:
        raise BitmcuError(f"config key 'train.sam': {cfg.train.sam} must be >= 0")
    if cfg.train.dampen < 0:
        raise BitmcuError(f"config key 'train.dampen': {cfg.train.dampen} must be >= 0")
    if cfg.train.lr <= 0:
        raise BitmcuError(f"config key 'train.lr': {cfg.train.lr} must be > 0")
    if cfg.train.device not in ("auto", "cpu", "cuda") and not cfg.train.device.startswith("cuda:"):
        raise BitmcuError(
            f"config key 'train.device': {cfg.train.device!r} is not allowed; use 'auto', 'cpu' or 'cuda'"
        )


def config_from_dict(data: dict) -> Config:
    return _check(_build(Config, data))


# Keys of earlier versions, each with the value under which a run trained then behaves as every
# run does now. A stored config (a checkpoint's) that holds one at that value still loads; at
# another value it describes a model this version cannot rebuild, and is refused.
RETIRED_KEYS: dict[str, Any] = {
    "model.conv_act_bits": 8,  # 8-bit maps between the convolutions, the only ones exported
}


def drop_retired_keys(data: dict) -> dict:
    """A copy of a stored config without its retired keys (see :data:`RETIRED_KEYS`)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, kept in RETIRED_KEYS.items():
        section, name = key.split(".")
        values = data.get(section)
        if not isinstance(values, dict) or name not in values:
            continue
        if values[name] != kept:
            raise BitmcuError(f"config key '{key}' = {values[name]!r}: this bitmcu no longer "
                              f"supports it (runs now behave as with {kept!r}); retrain the run")
        del values[name]
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as YAML (``3``, ``0.1``, ``[64, 64]``, ``null``)."""
    if "=" not in text:
        raise BitmcuError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def override(key: str, value: Any) -> str:
    """The ``--set`` text that gives ``key`` the value ``value`` (parse_override's inverse:
    YAML, so that 1e-06 stays a number and 'null' a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = json.loads(json.dumps(data))  # deep copy
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node = data
        cls = Config
        for depth, p in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(cls)}
            if p not in names:
                where = ".".join(parts[:depth])
                allowed = ", ".join((where + "." if where else "") + n for n in names)
                raise BitmcuError(f"unknown config key '{key}'; allowed keys here: {allowed}")
            tp = typing.get_type_hints(cls)[p]
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise BitmcuError(f"config key '{key}' is a section; set one of its keys")
                node[p] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise BitmcuError(f"config key '{'.'.join(parts[: depth + 1])}' has no sub-keys")
                node = node.setdefault(p, {})
                if not isinstance(node, dict):
                    raise BitmcuError(f"config key '{'.'.join(parts[: depth + 1])}' is a section "
                                      f"(a mapping of keys), not {node!r}")
                cls = tp
    return data


def config_dir() -> Path:
    """The folder with the named configurations, package data (``bitmcu/configs``; in a
    checkout, ``configs/`` links to it), so an installed bitmcu has them too."""
    return Path(__file__).resolve().parent.parent / "configs"


def named_configs() -> list[str]:
    d = config_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_config(source: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config from a YAML path or a named config under ``configs/`` (default: defaults)."""
    data: dict = {}
    if source is not None:
        path = Path(source)
        if not path.exists() and not source.endswith((".yaml", ".yml")):
            path = config_dir() / f"{source}.yaml"
        if path.is_dir():
            raise BitmcuError(f"config {source!r} is a folder; give a YAML file or a named config")
        if not path.exists():
            raise BitmcuError(
                f"config {source!r} not found; give a YAML file or one of: "
                + (", ".join(named_configs()) or "(no named configs)")
            )
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise BitmcuError(f"config {path}: top level must be a mapping of keys")
    data = apply_overrides(data, overrides or [])
    return config_from_dict(data)
