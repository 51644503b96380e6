"""Sampling a decoder run: (seed, class) pairs -> images, by the float (QAT) decoder, the numpy
integer reference or the host-compiled C engine, and grids of them as PNG.

Every engine takes its latent from the same integer sampler (:mod:`bitmcu.core.rng`), so the three
draw the same picture for the same seed: the float decoder's computation is exact integer
arithmetic too, and the figures compare like with like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError, choices
from ..core.rng import SEED_MAX, latent_scale
from ..deploy import reference
from ..deploy.codegen import model_header
from ..deploy.hostc import HostModel
from ..train import model_from_checkpoint
from ..train.lower import load_int_model

ENGINES = ("float", "int", "c")


def load_decoder(run: str | Path, temperature: float | None = None):
    """(checkpoint blob, integer model) of a decoder run; a classifier run is refused.
    ``temperature`` replaces the run's sampling temperature (model.temperature), 0..2."""

    model, blob = load_int_model(run)
    if not model.generative:
        raise BitmcuError(f"{run}: a classifier (model.family {blob['cfg'].model.family}); "
                          "sampling needs a decoder run (model.family decoder)")
    if temperature is not None:
        if not 0 < temperature <= 2:
            raise BitmcuError(f"--temperature {temperature}: must be in (0, 2] (1 = the prior "
                              "the decoder was trained with)")
        model = model.with_latent_scale(latent_scale(temperature, blob["cfg"].model.prior))
    return blob, model


def sample_images(blob: dict, model, seeds: np.ndarray, classes: np.ndarray,
                  engine: str = "int", has_mul: bool = True) -> np.ndarray:
    """(N,) seeds and classes -> (N, side, side) uint8 images by `engine`."""
    if engine not in ENGINES:
        raise BitmcuError(f"--engine {engine!r} is not allowed; use {choices(ENGINES)}")
    seeds, classes = np.asarray(seeds), np.asarray(classes)
    if len(classes) and (classes.min() < 0 or classes.max() >= model.n_classes):
        raise BitmcuError(f"classes must be 0..{model.n_classes - 1}")
    z = model.input.latents(seeds, classes)
    if engine == "int":
        parts = [reference.generate(model, z[i : i + 500], classes[i : i + 500])
                 for i in range(0, len(z), 500)]  # bounded memory: the windows are int64
        return np.concatenate(parts) if parts else np.zeros(
            (0, model.input_size, model.input_size), np.uint8)
    if engine == "c":
        host = HostModel(model_header(model, "bitmcu sample"), has_mul=has_mul)
        try:
            return host.generate(seeds, classes, model.input_size, model.latent)[0]
        finally:
            host.close()
    import torch

    dec = model_from_checkpoint(blob)
    out = []
    with torch.no_grad():
        for i in range(0, len(z), 2000):
            out.append(dec.decode(torch.from_numpy(z[i : i + 2000].astype(np.float32)),
                                  torch.from_numpy(classes[i : i + 2000])).numpy())
    return np.concatenate(out).astype(np.uint8) if out else np.zeros((0, model.input_size,
                                                                        model.input_size), np.uint8)


def grid(images: np.ndarray, rows: int, pad: int = 1) -> np.ndarray:
    """(rows * cols, h, w) images -> one (rows, cols) tiled uint8 picture, padded."""
    n, h, w = images.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 96, dtype=np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    return out


def save_png(picture: np.ndarray, path: str | Path, scale: int = 4) -> None:
    """An 8-bit grey PNG of a uint8 picture, each pixel ``scale`` x ``scale``: the exact
    values (a colour map would round some by one)."""
    from PIL import Image

    path = Path(path)
    big = np.kron(picture.astype(np.uint8), np.ones((scale, scale), dtype=np.uint8))
    tmp = path.with_name(path.name + ".part.png")
    Image.fromarray(big).save(tmp)  # 2-D uint8: 8-bit grey ("L")
    tmp.replace(path)


MAX_PER_CLASS = 1000  # samples per class (a row of the grid) that `sample` draws into a PNG
MAX_PER_CLASS_NPZ = 10000  # ... into an .npz (and that `judge` draws)


def check_seeds(seed: int, n: int) -> None:
    """Seeds seed..seed+n-1 must be sampler states 0..2^32-1 (they are not wrapped around)."""

    if not 0 <= seed or seed + n - 1 > SEED_MAX:
        raise BitmcuError(f"--seed {seed}: the seeds {seed}..{seed + n - 1} must lie in "
                          f"0..{SEED_MAX:,}")


def sample_grid(run: str | Path, out: str | Path, per_class: int = 8, engine: str = "int",
                seed: int = 1, temperature: float | None = None) -> np.ndarray:
    """`per_class` samples of each class (seeds seed, seed + 1, ...) as a PNG grid with a row
    per class (``out`` ending in .png) or as raw samples (.npz, see :func:`save_samples`)."""
    out = Path(out)
    suffix = out.suffix.lower()
    npz = suffix == ".npz"
    if suffix not in (".png", ".npz"):
        raise BitmcuError(f"--out {out}: give a file name ending in .png (a grid, a row per "
                          "class) or .npz (the raw samples)")
    most = MAX_PER_CLASS_NPZ if npz else MAX_PER_CLASS
    if not 1 <= per_class <= most:
        raise BitmcuError(f"--per-class {per_class}: must be 1..{most:,} for " + (
            "an .npz" if npz else f"a PNG grid, a row per class (an .npz takes up to "
                                  f"{MAX_PER_CLASS_NPZ:,})"))
    if not out.parent.is_dir():
        raise BitmcuError(f"--out {out}: the folder {out.parent} does not exist")
    blob, model = load_decoder(run, temperature)
    classes = np.repeat(np.arange(model.n_classes), per_class)
    check_seeds(seed, len(classes))
    seeds = seed + np.arange(len(classes))
    images = sample_images(blob, model, seeds, classes, engine)
    if npz:
        save_samples(out, images, classes, seeds, engine, model, temperature
                     if temperature is not None else blob["cfg"].model.temperature)
    else:
        save_png(grid(images, model.n_classes), out)
    return images


def save_samples(path: Path, images: np.ndarray, classes: np.ndarray, seeds: np.ndarray,
                 engine: str, model, temperature: float) -> None:
    """The raw samples as an .npz any outside tool can judge: ``images`` (N, side, side)
    uint8, ``classes`` and ``seeds`` (N,), ``temperature``, ``latent_scale``, ``engine``."""
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, images=images, classes=classes.astype(np.int64),
                        seeds=seeds.astype(np.int64), temperature=np.float64(temperature),
                        latent_scale=np.int64(model.latent_scale), engine=np.str_(engine))
    tmp.replace(path)


# ------------------------------------------------------------------------------ text

TEXT_ENGINES = ("int", "c")
MAX_LINES = 100_000


def load_text_model(run: str | Path, temperature: float | None = None):
    """(checkpoint blob, integer model) of a character model run, at ``temperature`` (0..2]
    in place of the run's model.temperature where given."""
    model, blob = load_int_model(run)
    if not model.is_text:
        raise BitmcuError(f"{run}: not a text model (model.family {blob['cfg'].model.family}); "
                          "lines come from a charrnn run")
    if temperature is not None:
        if not 0 < temperature <= 2:
            raise BitmcuError(f"--temperature {temperature}: must be in (0, 2] (1 = the "
                              "model's own distribution, lower: more likely characters)")
        model = model.with_temperature(temperature)
    return blob, model


def prefix_tokens(model, prefix: str | None) -> list[int] | None:
    """A prefix's tokens; refused where a character is not in the vocabulary or the prefix
    leaves no room to continue it."""
    if not prefix:
        return None
    vocab = model.input.vocab
    bad = sorted(set(prefix) - set(vocab[1:]))
    if bad:
        raise BitmcuError(f"--prefix {prefix!r}: {''.join(bad)!r} not in the model's "
                          f"vocabulary {vocab[1:]!r}")
    if len(prefix) >= model.input.max_chars:
        raise BitmcuError(f"--prefix {prefix!r}: {len(prefix)} characters; a line holds at most "
                          f"{model.input.max_chars}, so the prefix must be shorter")
    return [vocab.index(c) for c in prefix]


def sample_lines(model, seeds, engine: str = "int", prefix: str | None = None,
                 has_mul: bool = True) -> list[str]:
    """One line per seed by ``engine``: the numpy reference (int) or the host-compiled C
    engine (c), token for token the same."""
    if engine not in TEXT_ENGINES:
        raise BitmcuError(f"--engine {engine!r} is not allowed for a text model; use "
                          f"{choices(TEXT_ENGINES)}")
    pre = prefix_tokens(model, prefix)
    seeds = np.asarray(seeds, dtype=np.int64)
    if engine == "int":
        return reference.text_lines(model, seeds, pre)
    host = HostModel(model_header(model, "bitmcu sample"), has_mul=has_mul)
    try:
        tokens, _ = host.generate_text(seeds, model.input.max_chars, model.n_classes, pre)
    finally:
        host.close()
    return [reference.decode(model, row) for row in tokens]


def sample_text(run: str | Path, n: int = 10, engine: str = "int", seed: int = 1,
                temperature: float | None = None, prefix: str | None = None,
                out: str | Path | None = None) -> list[str]:
    """n lines of a character model (seeds seed, seed + 1, ...), written to ``out`` (.txt, one
    line each) where given."""
    if not 1 <= n <= MAX_LINES:
        raise BitmcuError(f"--lines {n}: must be 1..{MAX_LINES}")
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".txt":
            raise BitmcuError(f"--out {out}: a text model's lines go to a .txt file")
        if not out.parent.is_dir():
            raise BitmcuError(f"--out {out}: the folder {out.parent} does not exist")
    _, model = load_text_model(run, temperature)
    check_seeds(seed, n)
    lines = sample_lines(model, seed + np.arange(n), engine, prefix)
    if out is not None:
        tmp = out.with_name(out.name + ".part")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(out)
    return lines
