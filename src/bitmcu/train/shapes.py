"""Shapes of the model families, from the config alone (no torch): what ``config`` checks before
a run starts and what ``models`` builds. Errors name the config key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import BitmcuError, choices
from ..deploy.ir import MAX_FRONT

if TYPE_CHECKING:
    from .config import Config

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

    >>> from bitmcu.train.config import Config, ModelConfig
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

    >>> from bitmcu.train.config import Config, ModelConfig
    >>> cnn_channels(Config(model=ModelConfig(family="cnn", channels=8,
    ...                                       conv=["dw", "pool", "dw*2", "pool"])))
    [8, 8, 8, 16, 16]
    """
    chans = [cfg.model.channels]
    for i, st in enumerate(cfg.model.conv):
        chans.append(chans[-1] * cnn_stage(st, i)[1])
    return chans


CONVNET_STAGES = ("conv", "pool")


def convnet_shapes(cfg: Config) -> list[tuple[int, int]]:
    """(channels, side) after each stage of a ``convnet``; errors name the stage.

    Every ``conv`` keeps the side (padding 1); every ``pool`` halves it and doubles the width of
    the convolutions after it.

    >>> from bitmcu.train.config import Config, ModelConfig
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


DECODER_STAGES = ("up*K", "conv*K")


def decoder_stage(st: str, i: int) -> tuple[int, int]:
    """A decoder ``model.conv`` entry -> (upscale factor, output channels): ``up*K`` is a 3x3
    convolution (padding 1) to 4K channels whose 2x2 groups become the pixels of a map of twice
    the side (sub-pixel convolution, ``pixel_shuffle``); ``conv*K`` keeps the side."""
    op, star, k = str(st).partition("*")
    if op in ("up", "conv") and star and k.isdigit() and int(k) >= 1:
        return (2 if op == "up" else 1), int(k)
    raise BitmcuError(f"config key 'model.conv[{i}]': {st!r} is not allowed with model.family "
                      f"decoder; use {choices(DECODER_STAGES)} (K output channels, >= 1)")


def decoder_shapes(cfg: Config) -> list[tuple[int, int]]:
    """(channels, side) of the first map and after each stage; errors name the key.

    >>> from bitmcu.train.config import Config, DataConfig, ModelConfig
    >>> decoder_shapes(Config(data=DataConfig(dataset="dice", size=32), model=ModelConfig(
    ...     family="decoder", channels=8, start=4, conv=["up*8", "up*8", "up*1"])))
    [(8, 4), (8, 8), (8, 16), (1, 32)]
    """
    m = cfg.model
    if m.latent < 1:
        raise BitmcuError(f"config key 'model.latent': {m.latent} must be >= 1 (latent size)")
    if not m.conv:
        raise BitmcuError("config key 'model.conv': a decoder needs at least one stage (up*K "
                          "or conv*K, the last one *1), e.g. [up*8, up*8, up*1]")
    if m.channels < 1 or m.start < 1:
        raise BitmcuError(f"config keys 'model.channels' and 'model.start': {m.channels} "
                          f"channels of side {m.start} must both be >= 1")
    shapes = [(m.channels, m.start)]
    for i, st in enumerate(m.conv):
        f, k = decoder_stage(st, i)
        shapes.append((k, shapes[-1][1] * f))
    if shapes[-1] != (1, cfg.data.size):
        raise BitmcuError(f"config key 'model.conv': stages {m.conv} from a {m.start}x{m.start} "
                          f"map make {shapes[-1][0]} channel(s) of {shapes[-1][1]}x{shapes[-1][1]}"
                          f"; the output must be 1 channel of data.size {cfg.data.size}x"
                          f"{cfg.data.size} (the last stage ends in *1, and start * 2^ups = size)")
    if not 0 < m.temperature <= 2:
        raise BitmcuError(f"config key 'model.temperature': {m.temperature} must be in (0, 2]")
    return shapes
