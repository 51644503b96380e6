"""Training plots: curves, per-layer weight histograms with code usage, first-layer tiles."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .stats import layer_stats  # noqa: E402


def plot_curves(metrics: list[dict], path: Path) -> None:
    ep = [m["epoch"] for m in metrics]
    split = "val" if "val_loss" in metrics[0] else "test"  # data.validation: the held-out split
    name = "validation" if split == "val" else "test"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [m["train_loss"] for m in metrics], label="train")
    a1.plot(ep, [m[f"{split}_loss"] for m in metrics], label=name)
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.set_yscale("log")
    a1.legend()
    if f"{split}_acc" in metrics[0]:
        a2.plot(ep, [100 * m["train_acc"] for m in metrics], label="train")
        a2.plot(ep, [100 * m[f"{split}_acc"] for m in metrics], label=name)
        a2.set_ylabel("accuracy (%)")
    elif f"{split}_bpc" in metrics[0]:  # a character model
        a2.plot(ep, [m["train_bpc"] for m in metrics], label="train")
        a2.plot(ep, [m[f"{split}_bpc"] for m in metrics], label=name)
        a2.set_ylabel("bits per character")
    else:  # a decoder: reconstruction error per pixel
        a2.plot(ep, [m["train_mse"] for m in metrics], label="train (sampled latent)")
        a2.plot(ep, [m[f"{split}_mse"] for m in metrics], label=f"{name} (mean latent)")
        a2.set_ylabel("squared error per pixel (0..1)")
        a2.set_yscale("log")
    a2.set_xlabel("epoch")
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_weights(model, path: Path) -> None:
    stats = [s for s in layer_stats(model) if s.levels]
    if not stats:
        return
    layers = dict(model.weight_layers())
    fig, axes = plt.subplots(1, len(stats), figsize=(4 * len(stats), 3.2), squeeze=False)
    for ax, s in zip(axes[0], stats, strict=True):
        if len(s.levels) > 32:
            q = layers[s.name].integer_weight().numpy().ravel()
            ax.hist(q, bins=64)
        else:
            ax.bar([str(v) for v in s.levels], s.counts)
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.set_title(f"{s.name} {s.scheme} {s.shape[0]}x{s.shape[1]}\n"
                     f"entropy {s.entropy:.2f} of {math.log2(len(s.levels)):.2f} bits", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_first_layer(model, size: int, path: Path, max_tiles: int = 64) -> None:
    layer = model.layers[0]
    pixels = (size * size, size * size + 1)
    if hasattr(model, "decode") or layer.weight.shape[1] not in pixels:  # no pixels (cnn, decoder)
        return
    w = (layer.integer_weight() if layer.scheme.exportable else layer.weight.detach()).numpy()
    w = w[:, : size * size]  # without the bias unit
    n = min(max_tiles, w.shape[0])
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            tile = w[i].reshape(size, size)
            m = np.abs(tile).max() or 1
            ax.imshow(tile, cmap="coolwarm", vmin=-m, vmax=m)
    fig.suptitle("first layer weights")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(np.log1p(cm), cmap="Blues")
    n = cm.shape[0]
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
