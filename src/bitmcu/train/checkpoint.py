"""Checkpoints: state dict + config + metrics in one file, written atomically, loaded safely."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .. import __version__
from ..core.errors import BitmcuError
from .config import Config, config_from_dict, drop_retired_keys
from .models import build_model

FORMAT = "bitmcu-checkpoint"
FORMAT_VERSION = 1


def config_digest(config: dict) -> str:
    """sha256 of a stored config: the checkpoint keeps it beside its weights, so a config
    edited afterwards (another scheme, say, for weights trained with this one) is found."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, model, optimizer, cfg: Config, n_classes: int, epoch: int,
                    metrics: list[dict], live=None, critic: dict | None = None,
                    mixture: dict | None = None) -> None:
    """``model`` is the model the run delivers; ``live``, where it differs (weight averaging),
    the model the optimizer trains, kept so that a resumed run continues exactly; ``critic``,
    a decoder's adversarial critic and its optimizer state (``train.adversarial``), for the
    same reason; ``mixture``, a decoder's fitted mixture prior (train/mixture.py)."""
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bitmcu_version": __version__,
        "config": cfg.to_dict(),
        "config_sha256": config_digest(cfg.to_dict()),
        "n_classes": n_classes,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "metrics": metrics,
    }
    if live is not None:
        blob["live"] = live.state_dict()
    if critic is not None:
        blob["critic"] = critic
    if mixture is not None:
        blob["mixture"] = mixture
    tmp = path.with_suffix(".pt.part")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def resolve_checkpoint(run: str | Path) -> Path:
    p = Path(run)
    if p.is_dir():
        p = p / "checkpoint.pt"
    if not p.is_file():
        raise BitmcuError(f"{run}: no checkpoint found (expected RUN_DIR/checkpoint.pt or a .pt file)")
    return p


def load_checkpoint(run: str | Path) -> dict:
    """Load and validate a checkpoint; a corrupted or foreign file gives a clear error."""
    path = resolve_checkpoint(run)
    if not zipfile.is_zipfile(path):
        raise BitmcuError(f"{path}: not a bitmcu checkpoint (a checkpoint is a PyTorch zip "
                          "archive; this file is none: truncated, or another kind of file)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and plain data: never loaded
        raise BitmcuError(f"{path}: not a bitmcu checkpoint (it holds Python objects other than "
                          "tensors and plain data, which bitmcu refuses to load)") from None
    except Exception as e:  # torch.load raises many types on damaged files; all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BitmcuError(f"{path}: a damaged bitmcu checkpoint, truncated or changed "
                          f"({first})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise BitmcuError(f"{path}: not a bitmcu checkpoint (no '{FORMAT}' marker)")
    if blob.get("format_version") != FORMAT_VERSION:
        raise BitmcuError(
            f"{path}: checkpoint format version {blob.get('format_version')!r}; this bitmcu "
            f"reads version {FORMAT_VERSION}"
        )
    for key in ("config", "n_classes", "epoch", "model", "metrics"):
        if key not in blob:
            raise BitmcuError(f"{path}: checkpoint is missing '{key}'")
    kinds = {"config": (dict, "a mapping"), "model": (dict, "a state dict"),
             "metrics": (list, "a list of per-epoch records")}
    for key, (kind, what) in kinds.items():
        if not isinstance(blob[key], kind):
            raise BitmcuError(f"{path}: checkpoint '{key}' must be {what}, not "
                              f"{type(blob[key]).__name__}")
    for key, low in (("n_classes", 1), ("epoch", 0)):
        v = blob[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise BitmcuError(f"{path}: checkpoint '{key}' must be a whole number >= {low}, "
                              f"not {v!r}")
    if not all(isinstance(m, dict) for m in blob["metrics"]):
        raise BitmcuError(f"{path}: checkpoint 'metrics' must be a list of per-epoch records")
    digest = blob.get("config_sha256")  # absent in checkpoints of earlier versions
    if digest is not None and digest != config_digest(blob["config"]):
        raise BitmcuError(f"{path}: the checkpoint's config was changed after its weights were "
                          "saved (its sha256 differs): the weights were trained for another "
                          "config; train the changed config as a new run")
    for key in ("model", "live"):
        for name, t in (blob.get(key) or {}).items():
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                raise BitmcuError(f"{path}: weights '{name}' hold NaN or infinite values (the "
                                  "run diverged, or the file was changed); retrain, with a "
                                  "lower train.lr")
    try:
        blob["cfg"] = config_from_dict(drop_retired_keys(blob["config"]))
    except BitmcuError as e:
        raise BitmcuError(f"{path}: checkpoint config is invalid: {e}") from None
    blob["path"] = path
    return blob


def model_from_checkpoint(blob: dict, live: bool = False):
    """The run's model; with ``live``, the optimizer's weights where the run averages weights."""

    model = build_model(blob["cfg"], blob["n_classes"])
    state = blob["live"] if live and "live" in blob else blob["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise BitmcuError(
            f"{blob['path']}: weights do not match the model its config describes ({first})"
        ) from None
    model.eval()
    return model
