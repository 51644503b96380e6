"""The one PRNG and the one integer latent sampler, mirrored by engine/bitmcu.c.

    xorshift32:  x ^= x << 13; x ^= x >> 17; x ^= x << 5   (uint32, never 0)
    seed -> state: seed ^ XORSHIFT_ZERO (XORSHIFT_ZERO where that is 0), then SEED_ROUNDS rounds
                   of xorshift32 (nearby seeds start far apart: from a small state the first
                   outputs of xorshift32 are small, which would bias the latent)
    latent value: w = xorshift32(); g = sum of w's four bytes - 510   (-510..510)
                  z = clamp((g * scale + 128) >> 8, -127, 127)      (int8, arithmetic shift)
    uniform prior (the sampler word's bit 8, UNIFORM): g = 2 * (w & 255) - 255 (-255..255)

g is a sum of four uniform bytes (Irwin-Hall): mean 0, variance 4 * (256^2 - 1) / 12 = 21845,
close to Gaussian. ``scale`` = round(temperature * 256 * LATENT_UNIT / sqrt(21845)), so that
at temperature 1 z has the standard deviation of LATENT_UNIT (32) latent units, the N(0, 1)
prior the decoder was trained with (0.992 of it at scale 55). With the uniform prior (a decoder
whose latent is each factor's position in its range, ``model.prior: uniform``) g is one uniform
byte, centred, and scale = round(temperature * 256 * LATENT_UNIT * sqrt(3) / 255): at temperature
1, z is uniform over +-sqrt(3) (55 latent units), variance 1. The sampler's word is the multiplier
(bits 0..7) with UNIFORM or'ed in for that prior. Functions take arrays of seeds and work on all
of them at once.

mixture prior (the word's MIXTURE flag; a decoder with ``model.prior: mixture``): per class K
components, fitted after training to the encoder's latents of the training images (ex-post
density estimation). One word picks the component: r = w >> 16, k = the number of the class's
thresholds cum[0..K-2] that are <= r; then per value one word as for the normal prior and
z = clamp(centre[k, i] + ((g * spread[k, i] + 128) >> 8), -127, 127): centre in latent units,
spread the component's standard deviation times the word's multiplier (55 at temperature 1).
"""

from __future__ import annotations

import math

import numpy as np

LATENT_UNIT = 32  # integer latent units per 1.0 of z (a decoder's int8 latent is z * 32)
XORSHIFT_ZERO = 0x9E3779B9  # mixed into every seed (xorshift32 stays at 0 from 0)
SEED_ROUNDS = 8
SEED_MAX = 2**32 - 1  # seeds are uint32 states: the CLI refuses others rather than wrap them
BYTE_SUM_MEAN = 510  # mean of the sum of four uniform bytes
BYTE_SUM_VAR = 4 * (256**2 - 1) / 12  # its variance: 21845
UNIFORM = 0x100  # the sampler word's flag for the uniform prior (BITMCU_LATENT_UNIFORM)
MIXTURE = 0x200  # its flag for a per-class mixture prior (BITMCU_LATENT_MIXTURE)


def seed_state(seeds) -> np.ndarray:
    """uint32 states of the given seeds (taken modulo 2^32)."""
    s = (np.asarray(seeds, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32) ^ np.uint32(XORSHIFT_ZERO)
    s = np.where(s == 0, np.uint32(XORSHIFT_ZERO), s)
    for _ in range(SEED_ROUNDS):
        s = xorshift32(s)
    return s


def xorshift32(state: np.ndarray) -> np.ndarray:
    """The next state (= the output) of each uint32 state."""
    x = np.asarray(state, dtype=np.uint32).copy()
    x ^= x << np.uint32(13)
    x ^= x >> np.uint32(17)
    x ^= x << np.uint32(5)
    return x


def latent_scale(temperature: float, prior: str = "normal") -> int:
    """The sampler's word for a temperature (1.0: the training prior's scale) and prior: the
    multiplier, with UNIFORM for the uniform prior."""
    if prior == "uniform":
        k = round(temperature * 256 * LATENT_UNIT * math.sqrt(3) / 255)
    else:  # normal, and a mixture's components: their spreads are this times their sd
        k = round(temperature * 256 * LATENT_UNIT / math.sqrt(BYTE_SUM_VAR))
    if not 1 <= k <= 255:
        raise ValueError(f"temperature {temperature} gives latent scale {k}; allowed 1..255")
    return k | {"uniform": UNIFORM, "mixture": MIXTURE}.get(prior, 0)


def describe_scale(word: int) -> str:
    """A sampler word in words: 'scale 55' or 'scale 56, uniform prior'."""
    return f"scale {word & 255}" + (", uniform prior" if word & UNIFORM else
                                    ", mixture prior" if word & MIXTURE else "")


def _byte_sum(x: np.ndarray) -> np.ndarray:
    """g of each word: the sum of its four bytes - 510."""
    w = x.astype(np.int64)
    return (w & 255) + ((w >> 8) & 255) + ((w >> 16) & 255) + (w >> 24) - BYTE_SUM_MEAN


def sample_latent(state: np.ndarray, n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """n latent values per state: ((N, n) int8 latents, the states after them)."""
    x = np.asarray(state, dtype=np.uint32)
    z = np.empty((len(x), n), dtype=np.int8)
    for i in range(n):
        x = xorshift32(x)
        g = 2 * (x.astype(np.int64) & 255) - 255 if scale & UNIFORM else _byte_sum(x)
        z[:, i] = np.clip((g * (scale & 255) + 128) >> 8, -127, 127)
    return z, x


def sample_mixture(state: np.ndarray, classes, cum: np.ndarray, centre: np.ndarray,
                   spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One latent per state from its class's mixture: cum (C, K) uint16 thresholds (the last
    unused), centre (C, K, n) int8, spread (C, K, n) uint8 -> ((N, n) int8 latents, the states
    after them)."""
    x = xorshift32(np.asarray(state, dtype=np.uint32))
    c = np.asarray(classes, dtype=np.int64)
    k = (cum[c, :-1].astype(np.int64) <= (x >> np.uint32(16)).astype(np.int64)[:, None]).sum(1)
    n = centre.shape[2]
    z = np.empty((len(x), n), dtype=np.int8)
    for i in range(n):
        x = xorshift32(x)
        v = centre[c, k, i].astype(np.int64) + ((_byte_sum(x) * spread[c, k, i] + 128) >> 8)
        z[:, i] = np.clip(v, -127, 127)
    return z, x


def latents_for(seeds, n: int, scale: int) -> np.ndarray:
    """(N, n) int8 latents of the given seeds: what the engine samples for each seed."""
    return sample_latent(seed_state(seeds), n, scale)[0]
