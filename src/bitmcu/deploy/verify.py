"""Verification: the host-compiled C engine must give the numpy reference's int32 logits exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.errors import BitmcuError
from . import reference
from .codegen import model_header
from .hostc import HostModel
from .ir import IntModel


@dataclass
class VerifyResult:
    n: int
    float_acc: float | None
    int_acc: float
    c_acc: dict[str, float]  # per build ("mul", "nomul")

    def text(self) -> str:
        parts = [f"verified {self.n} test images: C logits equal the numpy reference's for "
                 "every image"]
        if self.float_acc is not None:
            parts.append(f"float QAT accuracy:  {100 * self.float_acc:.2f}%")
        parts.append(f"integer reference:   {100 * self.int_acc:.2f}%")
        for k, v in self.c_acc.items():
            parts.append(f"C engine ({k + ')':<6}   {100 * v:.2f}%")
        return "\n".join(parts)


def compare_c_reference(model: IntModel, images: np.ndarray, builds=(True, False),
                        sanitize: bool = False, cc: str | None = None):
    """Run the reference and the C engine (with and without multiplier); raise on any difference.

    Returns (reference logits, {build name: C logits}).
    """
    ref = in_chunks(lambda x: reference.run(model, x)[0], images, "integer reference")
    header = model_header(model, "bitmcu verify")
    outs = {}
    for has_mul in builds:
        host = HostModel(header, has_mul=has_mul, cc=cc, sanitize=sanitize)
        try:
            c = in_chunks(lambda x, h=host: h.run(x, model.n_classes), images,
                          f"C engine ({'mul' if has_mul else 'nomul'})")
        finally:
            host.close()
        name = "mul" if has_mul else "nomul"
        diff = np.nonzero((c != ref).any(axis=1))[0]
        if len(diff):
            i = int(diff[0])
            raise BitmcuError(
                f"C engine ({name}) differs from the reference on {len(diff)} of {len(images)} "
                f"images; first: image {i}, C {c[i].tolist()} vs reference {ref[i].tolist()}"
            )
        outs[name] = c
    return ref, outs


def in_chunks(fn, x: np.ndarray, desc: str, size: int = 500) -> np.ndarray:
    """fn over x in chunks of ``size`` rows, concatenated; a progress bar on a terminal."""
    starts = range(0, len(x), size)
    bar = tqdm(starts, desc=desc, unit=f" x{size}", disable=None, leave=False)
    return np.concatenate([fn(x[i:i + size]) for i in bar]) if len(x) else fn(x)


def verify(run: str | Path, data_dir: str | None = None, limit: int | None = None,
           sanitize: bool = False, cc: str | None = None) -> VerifyResult:
    from ..train import evaluate, load_data, model_from_checkpoint
    from .export import load_int_model

    model, blob = load_int_model(run)
    if model.generative:
        return verify_decoder(model, blob, 1000 if limit is None else limit, sanitize, cc)
    cfg = blob["cfg"]
    if data_dir:
        cfg.data.data_dir = data_dir
    data = load_data(cfg)
    x, y = data.test_x, data.test_y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    float_acc = evaluate(model_from_checkpoint(blob), x, y).acc
    xs, ys = x.numpy(), y.numpy()
    ref, outs = compare_c_reference(model, xs, sanitize=sanitize, cc=cc)
    return VerifyResult(len(ys), float_acc, float((ref.argmax(1) == ys).mean()),
                        {k: float((v.argmax(1) == ys).mean()) for k, v in outs.items()})


@dataclass
class DecoderVerifyResult:
    n: int
    pixels: int  # pixels compared per engine
    float_equal: int  # images of the float (QAT) decoder equal to the reference's
    builds: list[str]

    def text(self) -> str:
        return (f"verified {self.n} (seed, class) samples: every one of {self.pixels:,} generated "
                f"pixels of the C engine ({', '.join(self.builds)}) equals the numpy reference's;"
                f"\nfloat (QAT) decoder: {self.float_equal} of {self.n} images equal the "
                "reference's")


def sample_inputs(model: IntModel, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n (seed, class) pairs: seeds seed.., classes in turn."""
    seeds = np.arange(seed, seed + n, dtype=np.int64)
    return seeds, np.arange(n) % model.n_classes


def compare_c_generate(model: IntModel, seeds: np.ndarray, classes: np.ndarray,
                       builds=(True, False), sanitize: bool = False, cc: str | None = None):
    """The reference's images of (seed, class) pairs; raise where the C engine's latents or any
    pixel differ (with and without multiplier)."""
    from ..core.rng import latents_for

    z = latents_for(seeds, model.latent, model.latent_scale)
    ref = reference.generate(model, z, classes)
    header = model_header(model, "bitmcu verify")
    for has_mul in builds:
        host = HostModel(header, has_mul=has_mul, cc=cc, sanitize=sanitize, decoder=True)
        try:
            images, cz = host.generate(seeds, classes, model.input_size, model.latent)
        finally:
            host.close()
        name = "mul" if has_mul else "nomul"
        if not np.array_equal(cz, z):
            raise BitmcuError(f"C engine ({name}): its latent sampler differs from the reference")
        diff = np.nonzero((images != ref).any(axis=(1, 2)))[0]
        if len(diff):
            i = int(diff[0])
            raise BitmcuError(f"C engine ({name}) differs from the reference on {len(diff)} of "
                              f"{len(seeds)} images ({int((images != ref).sum())} pixels); first: "
                              f"seed {int(seeds[i])}, class {int(classes[i])}")
    return ref


def verify_decoder(model: IntModel, blob: dict, n: int, sanitize: bool = False,
                   cc: str | None = None) -> DecoderVerifyResult:
    import torch

    from ..train import model_from_checkpoint

    seeds, classes = sample_inputs(model, n)
    ref = compare_c_generate(model, seeds, classes, sanitize=sanitize, cc=cc)
    from ..core.rng import latents_for

    z = latents_for(seeds, model.latent, model.latent_scale)
    with torch.no_grad():
        f = model_from_checkpoint(blob).decode(torch.from_numpy(z.astype(np.float32)),
                                               torch.from_numpy(classes)).numpy()
    same = int((f.astype(np.uint8) == ref).all(axis=(1, 2)).sum())
    return DecoderVerifyResult(n, int(ref.size), same, ["mul", "nomul"])
