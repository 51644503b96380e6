"""bitmcu's own procedural renderer of dice faces (``data.dataset: dice``).

Each image is one die face seen from the front: a light rounded-square outline (or none) and 1-6
light pips in the standard layouts on a dark background (0 = background, like MNIST and the
OLED of the electronic die). Every image draws its own variation from the ranges of
:class:`DiceConfig`: rotation, scale, offset, slight shear and perspective, corner
radius, outline width, pip radius and spread, brightness and contrast, noise. Antialiasing
supersamples each pixel 4x4.

Rendering is vectorised over images (chunks of a fixed size, no per-image Python loop) and
deterministic: the parameters come from one numpy generator seeded by (seed, split), so the
training and test sets come from different seeds. Labels are faces 1..6 as classes 0..5.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.errors import BitmcuError


@dataclass
class DiceConfig:
    """Variation of the dice renderer (``data.dataset: dice``); [min, max] ranges are drawn
    uniformly per image. Lengths are in units of the die's half-side unless said otherwise."""

    seed: int = 0  # the training set's seed; the test set uses seed + 1
    train: int = 60000  # training images
    test: int = 10000  # test images
    rotation: float = 30.0  # max rotation in degrees (either way)
    scale: list[float] = field(default_factory=lambda: [0.62, 0.85])  # die half-side / image half-side
    offset: float = 0.6  # max shift, as a fraction of the room beside the die
    shear: float = 0.08  # max horizontal shear of the face
    perspective: float = 0.06  # max projective tilt (slight perspective)
    corner: list[float] = field(default_factory=lambda: [0.15, 0.4])  # corner radius
    outline: float = 0.9  # share of dice drawn with their rounded-square outline (rest: none)
    outline_width: list[float] = field(default_factory=lambda: [0.08, 0.14])
    pip_radius: list[float] = field(default_factory=lambda: [0.12, 0.17])
    pip_spread: list[float] = field(default_factory=lambda: [0.5, 0.58])  # corner pips' offset
    brightness: list[float] = field(default_factory=lambda: [0.75, 1.0])  # lit pixels, 0..1
    background: float = 0.05  # max background level, 0..1 (contrast)
    noise: float = 0.02  # standard deviation of Gaussian pixel noise, 0..1
    antialias: bool = True  # shade edge pixels by their distance to the edge (else hard edges)


# Pip centres of each face in units of the pip spread, y down (face 1 .. 6).
PIPS = {
    1: [(0, 0)],
    2: [(1, -1), (-1, 1)],
    3: [(1, -1), (0, 0), (-1, 1)],
    4: [(-1, -1), (1, -1), (-1, 1), (1, 1)],
    5: [(-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)],
    6: [(-1, -1), (-1, 0), (-1, 1), (1, -1), (1, 0), (1, 1)],
}
CHUNK = 512  # images rendered at once (fixed: the noise stream depends on it)


def _pip_table() -> tuple[np.ndarray, np.ndarray]:
    """(6, 6, 2) pip centres per face and (6, 6) which of the six slots a face uses."""
    pos = np.zeros((6, 6, 2), dtype=np.float32)
    used = np.zeros((6, 6), dtype=bool)
    for face, pips in PIPS.items():
        pos[face - 1, : len(pips)] = pips
        used[face - 1, : len(pips)] = True
    return pos, used


def _uniform(rng: np.random.Generator, lo_hi, n: int) -> np.ndarray:
    lo, hi = lo_hi
    return rng.uniform(lo, hi, n).astype(np.float32)


def draw_params(cfg, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The random variation of n dice, one array per quantity (faces 0..5 included)."""
    p = {"face": rng.integers(0, 6, n)}
    rot = np.deg2rad(cfg.rotation)
    p["angle"] = rng.uniform(-rot, rot, n).astype(np.float32)
    p["scale"] = _uniform(rng, cfg.scale, n)
    # the offset moves the die at most by `offset` of the room left beside it
    room = 1.0 - p["scale"] * np.sqrt(2.0, dtype=np.float32) * 0.85
    p["dx"] = rng.uniform(-1, 1, n).astype(np.float32) * cfg.offset * np.maximum(room, 0)
    p["dy"] = rng.uniform(-1, 1, n).astype(np.float32) * cfg.offset * np.maximum(room, 0)
    p["shear"] = rng.uniform(-cfg.shear, cfg.shear, n).astype(np.float32)
    p["px"] = rng.uniform(-cfg.perspective, cfg.perspective, n).astype(np.float32)
    p["py"] = rng.uniform(-cfg.perspective, cfg.perspective, n).astype(np.float32)
    p["corner"] = _uniform(rng, cfg.corner, n)
    p["outline"] = (rng.uniform(0, 1, n) < cfg.outline).astype(np.float32)
    p["width"] = _uniform(rng, cfg.outline_width, n)
    p["radius"] = _uniform(rng, cfg.pip_radius, n)
    p["spread"] = _uniform(rng, cfg.pip_spread, n)
    p["fg"] = _uniform(rng, cfg.brightness, n)
    p["bg"] = rng.uniform(0, cfg.background, n).astype(np.float32)
    return p


def _render_chunk(p: dict[str, np.ndarray], size: int, antialias: bool,
                  noise: np.ndarray) -> np.ndarray:
    """(n, size, size) uint8 images of the dice whose parameters are p (torch, vectorised).

    The lit shape is a signed distance field in face units (outline stroke and pips); with
    antialiasing a pixel's coverage is 0.5 - distance / pixel size, clamped to 0..1 (one sample
    per pixel), without it a pixel is lit where the distance is <= 0."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()}
    n = len(t["face"])
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = torch.meshgrid(c, c, indexing="ij")
    x, y = x.reshape(1, -1), y.reshape(1, -1)  # (1, P)
    col = lambda k: t[k].reshape(n, 1)  # noqa: E731
    # slight perspective: image point -> its point on the plane of the die
    w = 1.0 + col("px") * x + col("py") * y
    x, y = x / w - col("dx"), y / w - col("dy")
    cos, sin = torch.cos(col("angle")), torch.sin(col("angle"))
    u = (cos * x + sin * y) / col("scale")
    v = (-sin * x + cos * y) / col("scale")
    u = u - col("shear") * v  # horizontal shear of the face
    # rounded square of half-side 1: signed distance to its boundary, then the outline stroke
    r = col("corner")
    qx, qy = u.abs() - (1 - r), v.abs() - (1 - r)
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    d = outside + torch.maximum(qx, qy).clamp_max(0) - r
    half = col("width") / 2
    sdf = torch.where(col("outline") > 0, (d + half).abs() - half, torch.full_like(d, 1e3))
    pos, used = _pip_table()
    pos, used = torch.from_numpy(pos)[t["face"]], torch.from_numpy(used)[t["face"]]  # (n, 6, .)
    spread, radius = col("spread"), col("radius")
    for k in range(6):
        pip = torch.hypot(u - pos[:, k, 0:1] * spread, v - pos[:, k, 1:2] * spread) - radius
        sdf = torch.where(used[:, k : k + 1], torch.minimum(sdf, pip), sdf)
    if antialias:
        pixel = 2.0 / size / col("scale")  # one pixel in face units
        cover = (0.5 - sdf / pixel).clamp(0, 1)
    else:
        cover = (sdf <= 0).float()
    cover = cover.reshape(n, size, size)
    img = col("bg").reshape(n, 1, 1) + (col("fg") - col("bg")).reshape(n, 1, 1) * cover
    img = img + torch.from_numpy(noise)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def render(cfg, n: int, size: int, seed: int, what: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n dice images (n, size, size) uint8 and their labels (faces 1..6 as 0..5); ``what``
    names them on a progress bar (shown on a terminal only)."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 0xD1CE])
    params = draw_params(cfg, n, rng)
    images = np.empty((n, size, size), dtype=np.uint8)
    starts = range(0, n, CHUNK)
    if what is not None:
        starts = tqdm(starts, desc=what, unit="chunk", leave=False,
                      disable=not sys.stderr.isatty())
    for i in starts:
        chunk = {k: v[i : i + CHUNK] for k, v in params.items()}
        m = len(chunk["face"])
        noise = (rng.standard_normal((m, size, size)) * cfg.noise).astype(np.float32)
        images[i : i + m] = _render_chunk(chunk, size, cfg.antialias, noise)
    return images, params["face"].astype(np.int64)


# The renderer's factors a decoder's latent can carry (``train.objective: factors``), most
# visible first; a latent of n values carries the first n, the rest stay at their mid-range.
FACTORS = ("angle", "scale", "dx", "dy", "radius", "spread", "fg", "corner")


def factor_positions(cfg, p: dict[str, np.ndarray]) -> np.ndarray:
    """(n, len(FACTORS)) where each factor of each die lies in its range, 0..1 (uniform)."""
    def pos(v, lo, hi):
        return np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.full_like(v, 0.5)

    rot = np.deg2rad(cfg.rotation)
    room = cfg.offset * np.maximum(1.0 - p["scale"] * np.sqrt(2.0, dtype=np.float32) * 0.85, 0)
    span = np.where(room > 0, room, 1.0)
    u = {"angle": pos(p["angle"], -rot, rot), "scale": pos(p["scale"], *cfg.scale),
         "dx": np.where(room > 0, pos(p["dx"] / span, -1, 1), 0.5),
         "dy": np.where(room > 0, pos(p["dy"] / span, -1, 1), 0.5),
         "radius": pos(p["radius"], *cfg.pip_radius), "spread": pos(p["spread"], *cfg.pip_spread),
         "fg": pos(p["fg"], *cfg.brightness), "corner": pos(p["corner"], *cfg.corner)}
    return np.stack([u[k] for k in FACTORS], axis=1).astype(np.float32)


def clean_params(cfg, p: dict[str, np.ndarray], n_factors: int) -> dict[str, np.ndarray]:
    """The dice of p without the variation a latent of n_factors does not carry: factors past
    the first n_factors at their mid-range, and no shear, perspective, background or noise,
    the outline always drawn at its mid width."""
    q = dict(p)
    n = len(p["face"])
    mid = {"angle": 0.0, "scale": np.mean(cfg.scale), "dx": 0.0, "dy": 0.0,
           "radius": np.mean(cfg.pip_radius), "spread": np.mean(cfg.pip_spread),
           "fg": np.mean(cfg.brightness), "corner": np.mean(cfg.corner)}
    for k in FACTORS[n_factors:]:
        q[k] = np.full(n, mid[k], dtype=np.float32)
    for k in ("shear", "px", "py", "bg"):
        q[k] = np.zeros(n, dtype=np.float32)
    q["outline"] = np.ones(n, dtype=np.float32)
    q["width"] = np.full(n, np.mean(cfg.outline_width), dtype=np.float32)
    return q


def render_factors(cfg, n: int, size: int, seed: int, n_factors: int,
                   prior: str = "normal") -> tuple[np.ndarray, np.ndarray]:
    """The factor latents (n, n_factors) float32 and the clean dice (n, size, size) uint8 of
    the same parameters as :func:`render` draws for (n, seed): the training targets of a
    decoder whose latent is the renderer's own parameters. The latents follow ``prior`` by
    construction: normal, N(0, 1) (the inverse normal CDF of each factor's position u in its
    range), or uniform, (u - 0.5) * 2 sqrt(3) (linear in the factor, unit variance)."""
    rng = np.random.default_rng([seed, 0xD1CE])
    params = draw_params(cfg, n, rng)  # the same stream as render(): the same dice
    u = factor_positions(cfg, params)[:, :n_factors]
    if prior == "uniform":
        z = ((u - 0.5) * 2 * np.sqrt(3)).astype(np.float32)
    else:
        z = torch.special.ndtri(torch.from_numpy(np.clip(u, 0.0005, 0.9995))).numpy()
    clean = clean_params(cfg, params, n_factors)
    images = np.empty((n, size, size), dtype=np.uint8)
    zero = np.zeros((CHUNK, size, size), dtype=np.float32)
    for i in range(0, n, CHUNK):
        chunk = {k: v[i : i + CHUNK] for k, v in clean.items()}
        images[i : i + CHUNK] = _render_chunk(chunk, size, cfg.antialias, zero[: len(chunk["face"])])
    return z, images


def check_config(cfg) -> None:
    """Refuse ranges that make no sense, naming the key."""
    def pair(key, lo_hi, lo, hi):
        a, b = lo_hi
        if not (len(lo_hi) == 2 and lo <= a <= b <= hi):
            raise BitmcuError(f"config key 'data.dice.{key}': {list(lo_hi)} must be [min, max] "
                              f"with {lo} <= min <= max <= {hi}")

    for key, lo, hi in (("rotation", 0, 180), ("offset", 0, 1), ("shear", 0, 0.5),
                        ("perspective", 0, 0.3), ("outline", 0, 1), ("background", 0, 0.5),
                        ("noise", 0, 0.5)):
        v = getattr(cfg, key)
        if not lo <= v <= hi:
            raise BitmcuError(f"config key 'data.dice.{key}': {v} must be {lo}..{hi}")
    for key, lo, hi in (("scale", 0.2, 1.0), ("corner", 0.0, 1.0), ("outline_width", 0.01, 0.5),
                        ("pip_radius", 0.05, 0.3), ("pip_spread", 0.2, 0.7),
                        ("brightness", 0.1, 1.0)):
        pair(key, getattr(cfg, key), lo, hi)
    for key in ("train", "test"):
        if getattr(cfg, key) < 1:
            raise BitmcuError(f"config key 'data.dice.{key}': {getattr(cfg, key)} must be >= 1")


def _cached(cache, name: str, desc: dict, make) -> dict[str, np.ndarray]:
    """The arrays make() returns, cached in ``cache/prepared`` under name and a hash of desc."""
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / "prepared" / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rendered again
    t0 = time.monotonic()
    print(f"bitmcu: making {name} (once; kept in {path.parent})", file=sys.stderr, flush=True)
    out = make()
    print(f"bitmcu: made {name}: {sum(a.nbytes for a in out.values()) / 1e6:.0f} MB in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.part.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache is not an error
    return out


def dice_arrays(cfg, size: int, cache) -> dict[str, np.ndarray]:
    """Training and test sets (different seeds) of the dice renderer, cached under ``cache``."""
    def make():
        train_x, train_y = render(cfg, cfg.train, size, cfg.seed, f"{cfg.train} training dice")
        test_x, test_y = render(cfg, cfg.test, size, cfg.seed + 1, f"{cfg.test} test dice")
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    return _cached(cache, f"dice-{size}", {"size": size, **asdict(cfg), "v": 1}, make)


def dice_factor_arrays(cfg, size: int, n_factors: int, cache,
                       prior: str = "normal") -> dict[str, np.ndarray]:
    """The factor latents and clean targets (:func:`render_factors`) of the training and test
    sets of :func:`dice_arrays`: train_z, train_t, test_z, test_t."""
    if not 1 <= n_factors <= len(FACTORS):
        raise BitmcuError(f"train.objective factors: the latent carries 1..{len(FACTORS)} of the "
                          f"renderer's factors ({', '.join(FACTORS)}); model.latent is "
                          f"{n_factors}")

    def make():
        train_z, train_t = render_factors(cfg, cfg.train, size, cfg.seed, n_factors, prior)
        test_z, test_t = render_factors(cfg, cfg.test, size, cfg.seed + 1, n_factors, prior)
        return {"train_z": train_z, "train_t": train_t, "test_z": test_z, "test_t": test_t}

    desc = {"size": size, "factors": n_factors, **asdict(cfg), "v": 1}
    if prior != "normal":  # (the normal prior's cache entries keep their key)
        desc["prior"] = prior
    return _cached(cache, f"dice-factors-{size}", desc, make)
