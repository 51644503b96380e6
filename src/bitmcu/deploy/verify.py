"""Verification: the host-compiled C engine must give the numpy reference's int32 logits (a
decoder's pixels) exactly. Needs numpy and a C compiler, not torch: :func:`verify_model` checks
a saved integer model; :func:`bitmcu.apps.pipeline.verify` adds the trained float model's
figures for a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..core.errors import BitmcuError
from ..core.rng import latents_for
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


@dataclass
class DecoderVerifyResult:
    n: int
    pixels: int  # pixels compared per engine
    builds: list[str]
    float_equal: int | None = None  # images of the float (QAT) decoder equal to the reference's

    def text(self) -> str:
        text = (f"verified {self.n} (seed, class) samples: every one of {self.pixels:,} generated "
                f"pixels of the C engine ({', '.join(self.builds)}) equals the numpy reference's")
        if self.float_equal is not None:
            text += (f";\nfloat (QAT) decoder: {self.float_equal} of {self.n} images equal the "
                     "reference's")
        return text


def sample_inputs(model: IntModel, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n (seed, class) pairs: seeds seed.., classes in turn."""
    seeds = np.arange(seed, seed + n, dtype=np.int64)
    return seeds, np.arange(n) % model.n_classes


def compare_c_generate(model: IntModel, seeds: np.ndarray, classes: np.ndarray,
                       builds=(True, False), sanitize: bool = False, cc: str | None = None):
    """The reference's images of (seed, class) pairs; raise where the C engine's latents or any
    pixel differ (with and without multiplier)."""
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


def verify_model(model: IntModel, images: np.ndarray, labels: np.ndarray, sanitize: bool = False,
                 cc: str | None = None, float_acc: float | None = None) -> VerifyResult:
    """C == reference on ``images`` (both builds; raises on the first difference) and the
    accuracies on their ``labels``."""
    ref, outs = compare_c_reference(model, images, sanitize=sanitize, cc=cc)
    acc = lambda logits: float((logits.argmax(1) == labels).mean())  # noqa: E731
    return VerifyResult(len(images), float_acc, acc(ref), {k: acc(v) for k, v in outs.items()})


def verify_samples(model: IntModel, n: int, sanitize: bool = False,
                   cc: str | None = None) -> tuple[DecoderVerifyResult, np.ndarray]:
    """A decoder's n (seed, class) samples: C == reference for every pixel (both builds).
    Returns the result (without the float decoder's figure) and the reference's images."""
    seeds, classes = sample_inputs(model, n)
    ref = compare_c_generate(model, seeds, classes, sanitize=sanitize, cc=cc)
    return DecoderVerifyResult(n, int(ref.size), ["mul", "nomul"]), ref
