"""Verification: the host-compiled C engine must give the numpy reference's int32 logits exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import reference
from .codegen import model_header
from .errors import BitmcuError
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
    ref, _ = reference.run(model, images)
    header = model_header(model, "bitmcu verify")
    outs = {}
    for has_mul in builds:
        host = HostModel(header, has_mul=has_mul, cc=cc, sanitize=sanitize)
        try:
            c = host.run(images, model.n_classes)
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


def verify(run: str | Path, data_dir: str | None = None, limit: int | None = None,
           sanitize: bool = False, cc: str | None = None) -> VerifyResult:
    from .export import load_int_model
    from .train import evaluate, load_data, model_from_checkpoint

    model, blob = load_int_model(run)
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
