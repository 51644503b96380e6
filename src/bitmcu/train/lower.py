"""Lowering: a trained run's checkpoint -> the integer model (deploy.ir) that the reference and
the C engine run. The trained layers give their integer weights and shifts; nothing is
re-quantized here."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from ..core.errors import BitmcuError
from ..core.rng import latent_scale
from ..deploy.ir import Cell, ConvLayer, FCLayer, IntModel, PoolLayer, Sample, StageLayer
from ..quant import get_scheme
from ..train.checkpoint import model_from_checkpoint
from ..train.models import ACT_MAX, QuantConv2d
from .checkpoint import load_checkpoint
from .mixture import mixture_tables


def load_int_model(run: str | Path) -> tuple[IntModel, dict]:
    """A run's (or checkpoint file's) integer model and its checkpoint."""
    blob = load_checkpoint(run)
    return lower(blob), blob


def lower(blob: dict) -> IntModel:
    """Checkpoint (as loaded by :func:`load_checkpoint`) -> validated integer model."""

    cfg = blob["cfg"]
    where = blob["path"]
    if cfg.model.family == "convnet":
        raise BitmcuError(f"{where}: model.family convnet is a float teacher and cannot be "
                          "exported; use the run as train.teacher of a cnn or fc model")
    if cfg.model.norm != "rms":
        raise BitmcuError(f"{where}: export needs model.norm='rms' (folded into ShiftNorm); "
                          f"this run uses {cfg.model.norm!r}")
    if cfg.model.bias:
        raise BitmcuError(f"{where}: export needs model.bias=false; this run has biases")
    if cfg.model.scale != "per_tensor":
        raise BitmcuError(f"{where}: export needs model.scale='per_tensor'; this run uses "
                          f"{cfg.model.scale!r}")
    for i, s in enumerate(cfg.layer_scheme_names(cfg.n_weight_layers())):
        if not get_scheme(s).exportable:
            raise BitmcuError(f"{where}: layer {i} uses scheme {s!r} (float), which cannot be "
                              "exported; train with a quantized scheme")
    model = model_from_checkpoint(blob)
    if cfg.model.family == "charrnn":
        return _chars(model, cfg)
    if cfg.model.family == "decoder":
        return _decoder(model, cfg, blob["n_classes"], _mixture(blob))
    n = len(model.layers)
    layers = [FCLayer.from_levels(L.scheme.name, L.integer_weight().numpy(), relu=i < n - 1)
              for i, L in enumerate(model.layers)]
    front = _front(model, cfg, where) if cfg.model.family == "cnn" else []
    return IntModel.classifier(cfg.data.size, blob["n_classes"], act_max_for(cfg.model.act_bits),
                               layers, zlib.crc32(cfg.hash().encode()), cfg.name, front,
                               cfg.model.bias_unit).validate()


def _mixture(blob: dict) -> tuple | None:
    """A mixture-prior run's sampler tables (train/mixture.py); None for other priors."""
    if blob["cfg"].model.prior != "mixture":
        return None
    mix = blob.get("mixture")
    if not isinstance(mix, dict) or not all(torch.is_tensor(mix.get(k)) for k in
                                            ("centre", "sd", "weight")):
        raise BitmcuError(f"{blob['path']}: model.prior mixture, but the checkpoint holds no "
                          "fitted mixture (it is fitted after the last epoch: finish the run "
                          "with `bitmcu train --resume`)")
    return mixture_tables(mix)


def _decoder(model, cfg, n_classes: int, mixture: tuple | None) -> IntModel:

    biases = model.integer_biases()
    layers = [FCLayer.from_levels(L.scheme.name, L.integer_weight().numpy(), True,
                                  L.shift_value(), b) for L, b in zip(model.fcs, biases, strict=False)]
    stages = [StageLayer.from_levels(L.scheme.name, L.integer_weight().numpy(), c_in, side, f,
                                     L.shift_value(), b)
              for L, (c_in, side), f, b in zip(model.stages, model.shapes, model.factors,
                                               biases[len(layers):], strict=False)]
    return IntModel.decoder(cfg.data.size, n_classes, act_max_for(8), layers, stages,
                            zlib.crc32(cfg.hash().encode()), cfg.name, cfg.model.latent,
                            latent_scale(cfg.model.temperature, cfg.model.prior),
                            mixture).validate()


def _chars(model, cfg) -> IntModel:
    cells = [Cell.from_levels(L.scheme.name, L.integer_weight().numpy(), L.shift_value(), b)
             for L, b in zip(model.cells, model.integer_biases(), strict=True)]
    logits = FCLayer.from_levels(model.out.scheme.name, model.out.integer_weight().numpy(), False)
    sample = Sample.at(float(model.log_scale.detach().exp()), cfg.model.temperature)
    return IntModel.chars(model.vocab_text(), cfg.data.context, model.integer_embedding(), cells,
                          logits, sample, zlib.crc32(cfg.hash().encode()), cfg.name).validate()


def _front(model, cfg, where) -> list:

    conv_scheme = cfg.model.conv_scheme or cfg.model.scheme
    if not get_scheme(conv_scheme).exportable:
        raise BitmcuError(f"{where}: the convolutions use scheme {conv_scheme!r} (float), which "
                          "cannot be exported; train with a quantized model.conv_scheme")
    if act_max_for(cfg.model.act_bits) != ACT_MAX:
        raise BitmcuError(f"{where}: CNN export needs model.act_bits=8")
    front, side, chans = [], cfg.data.size, 1
    for i, L in enumerate([model.conv1, *model.stages]):
        if isinstance(L, QuantConv2d):
            front.append(ConvLayer.from_levels("conv1" if i == 0 else "dw", L.scheme.name,
                                               L.integer_weight().numpy(), side, int(L.shift),
                                               mult=L.out_channels // L.in_channels if i else 1))
            chans = L.out_channels
        else:
            front.append(PoolLayer(chans, side))
        side = front[-1].out_side
    return front


def act_max_for(bits: int) -> int:
    """Activations after ReLU are unsigned: act_bits bits hold 0..2^bits - 1."""
    return (1 << bits) - 1
