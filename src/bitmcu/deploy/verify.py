"""Verification: the host-compiled C engine must give the numpy reference's int32 logits (a
decoder's pixels) exactly. Needs numpy and a C compiler, not torch: :func:`verify_model` checks
a saved integer model; :func:`bitmcu.apps.pipeline.verify` adds the trained float model's
figures for a run."""

from __future__ import annotations

from dataclasses import dataclass

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


def compare_c(model: IntModel, batch: np.ndarray, builds=(True, False), sanitize: bool = False,
              cc: str | None = None):
    """Run the reference and the C engine (with and without multiplier) on a batch of the
    model's inputs (its input op's form: images, or (seed, class) rows); raise on any
    difference. Returns (reference outputs, {build name: C outputs})."""
    inp = model.input
    batch = np.asarray(batch)
    ref = in_chunks(lambda b: inp.reference(model, b), batch, "integer reference")
    header = model_header(model, "bitmcu verify")
    outs = {}
    for has_mul in builds:
        name = "mul" if has_mul else "nomul"
        host = HostModel(header, has_mul=has_mul, cc=cc, sanitize=sanitize)
        try:
            c = in_chunks(lambda b, h=host: inp.on_host(model, h, b), batch, f"C engine ({name})")
        finally:
            host.close()
        bad = (c != ref).reshape(len(c), -1)
        diff = np.nonzero(bad.any(axis=1))[0]
        if len(diff):
            i = int(diff[0])
            j = int(np.argmax(bad[i]))
            raise BitmcuError(
                f"C engine ({name}) differs from the reference on {len(diff)} of {len(batch)} "
                f"{inp.items} ({int(bad.sum())} values); first: {inp.item(batch, i)}, value {j}: "
                f"C {c[i].ravel()[j]} vs reference {ref[i].ravel()[j]}"
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


@dataclass
class TextVerifyResult:
    n: int
    tokens: int  # tokens generated per engine
    builds: list[str]

    def text(self) -> str:
        return (f"verified {self.n} seeded generations: all {self.tokens:,} tokens, and the "
                f"logits of every step, of the C engine ({', '.join(self.builds)}) equal the "
                "numpy reference's")


def verify_text(model: IntModel, n: int = 1000, sanitize: bool = False,
                cc: str | None = None) -> TextVerifyResult:
    """C == reference for a text model: the lines of seeds 1..n, token for token, and every
    step's logits, with and without the multiplier."""
    if n < 1:
        raise BitmcuError(f"--limit {n}: verify at least one generation")
    seeds = np.arange(1, n + 1).reshape(-1, 1)
    ref, outs = compare_c(model, seeds, sanitize=sanitize, cc=cc)
    tokens = sum(len(reference.line_tokens(row)) for row in ref[:, : model.input.max_chars])
    return TextVerifyResult(n, tokens, list(outs))


def sample_inputs(model: IntModel, n: int, seed: int = 1) -> np.ndarray:
    """n (seed, class) rows: seeds seed.., classes in turn."""
    seeds = np.arange(seed, seed + n, dtype=np.int64)
    return np.stack([seeds, np.arange(n) % model.n_classes], axis=1)


def verify_model(model: IntModel, images: np.ndarray, labels: np.ndarray, sanitize: bool = False,
                 cc: str | None = None, float_acc: float | None = None) -> VerifyResult:
    """C == reference on ``images`` (both builds; raises on the first difference) and the
    accuracies on their ``labels``."""
    ref, outs = compare_c(model, images, sanitize=sanitize, cc=cc)
    acc = lambda logits: float((logits.argmax(1) == labels).mean())  # noqa: E731
    return VerifyResult(len(images), float_acc, acc(ref), {k: acc(v) for k, v in outs.items()})


def verify_samples(model: IntModel, n: int, sanitize: bool = False,
                   cc: str | None = None) -> tuple[DecoderVerifyResult, np.ndarray]:
    """A decoder's n (seed, class) samples: C == reference for every pixel (both builds).
    Returns the result (without the float decoder's figure) and the reference's images."""
    ref, _ = compare_c(model, sample_inputs(model, n), sanitize=sanitize, cc=cc)
    return DecoderVerifyResult(n, int(ref.size), ["mul", "nomul"]), ref
