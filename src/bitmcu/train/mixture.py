"""A decoder's mixture prior (``model.prior: mixture``): after training, per class a mixture of
``model.mixture`` Gaussians fitted to where the encoder puts that class's training images.

A WAE's or CVAE's encoder does not fill the N(0, 1) prior its loss pulls it towards: some of the
prior's latents lie where no training image was encoded, and the decoder draws smudged or
wrong faces there. Sampling from a density fitted to the encoder's latents afterwards (ex-post
density estimation; Ghosh et al., "From Variational to Deterministic Autoencoders", ICLR 2020)
keeps the samples where the decoder was trained. Here the density is, per class, k-means of
the encoder's means with each cluster's share and per-value standard deviation: a diagonal
Gaussian mixture the chip samples with one table lookup and the normal prior's byte sums
(core/rng.py, bitmcu_sample_mixture).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from ..core.errors import BitmcuError
from ..core.rng import LATENT_UNIT

CUM_ONE = 65536  # the component word's range: r = xorshift32 >> 16


@torch.no_grad()
def encoder_means(model, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> np.ndarray:
    """(N, latent) float64: the encoder's mean of each image, in units of z."""
    model.eval()
    dev = next(model.parameters()).device
    out = [model.encode(x[i : i + batch].float().to(dev), y[i : i + batch].to(dev))[0].cpu()
           for i in range(0, len(x), batch)]
    return torch.cat(out).double().numpy()


def check_mixture_data(y: np.ndarray, n_classes: int, k: int) -> None:
    """Refuse training images too few for k components in some class (the trainer asks before
    its first epoch, not after its last)."""
    counts = np.bincount(np.asarray(y), minlength=n_classes)
    if counts.min() < k:
        c = int(counts.argmin())
        raise BitmcuError(f"model.mixture {k}: class {c} has {counts[c]} training images; each "
                          f"class needs at least as many as the mixture has components")


def fit_mixture(mu: np.ndarray, y: np.ndarray, n_classes: int, k: int, seed: int
                ) -> dict[str, torch.Tensor]:
    """Per class, k-means (k-means++ starts, seeded) of its latents ``mu``: the clusters'
    centres, their per-value standard deviations and their shares, as float64 tensors
    ``centre`` and ``sd`` (classes, k, latent) and ``weight`` (classes, k)."""
    y = np.asarray(y)
    check_mixture_data(y, n_classes, k)
    centre = np.zeros((n_classes, k, mu.shape[1]))
    sd, weight = np.zeros_like(centre), np.zeros((n_classes, k))
    for c in range(n_classes):
        m = mu[y == c]
        centre[c], label = kmeans2(m, k, seed=np.random.default_rng([seed, c]), minit="++")
        sizes = np.bincount(label, minlength=k)
        for j in range(k):  # an empty cluster (never drawn) stands where the largest one is
            part = m[label == (j if sizes[j] else int(sizes.argmax()))]
            weight[c, j] = sizes[j] / len(m)
            centre[c, j], sd[c, j] = part.mean(0), part.std(0)
    return {"centre": torch.from_numpy(centre), "sd": torch.from_numpy(sd),
            "weight": torch.from_numpy(weight)}


def mixture_tables(mix: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampler's tables of a fitted mixture: cum (classes, k) uint16, the running shares
    as thresholds of a 16-bit word (the last one unused: 65535); centre (classes, k, latent) int8
    in latent units; sd (classes, k, latent) float32 in units of z."""
    w = mix["weight"].double().numpy()
    cum = np.minimum(np.round(np.cumsum(w, axis=1) * CUM_ONE), CUM_ONE - 1)
    cum[:, -1] = CUM_ONE - 1
    centre = np.clip(np.round(mix["centre"].double().numpy() * LATENT_UNIT), -127, 127)
    return cum.astype(np.uint16), centre.astype(np.int8), mix["sd"].float().numpy()
