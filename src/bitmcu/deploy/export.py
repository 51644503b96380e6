"""Export an integer model: model.h, the engine's copy, the example program, test data and the
report, written as one folder (the run-level export, with its accuracy check, is
:func:`bitmcu.apps.pipeline.export`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError, choices
from ..core.outdir import writing
from . import reference
from .codegen import (
    DECODER_MAIN,
    EXAMPLE_MAIN,
    MAKEFILE,
    TEXT_MAIN,
    fnv1a,
    images_header,
    lines_header,
    model_header,
    samples_header,
    table_sums,
)
from .hostc import HostModel, engine_dir, template
from .ir import IntModel, Weighted
from .plan import plan
from .reference import text_lines
from .verify import sample_inputs

MAX_IMAGES = 10000  # test images an export may embed (test_images.h)
# largest difference between the float and the integer model's accuracy that export accepts
# (0.02: 2 points; trained models differ by a few tenths, a broken conversion by far more)
MISMATCH_TOLERANCE = 0.02

# target -> whether the core multiplies (selects kernel forms at compile time)
TARGETS = {"generic": True, "ch32v003": False, "ch32v002": True, "cortex-m0": True}


@dataclass
class ExportReport:
    name: str
    target: str
    layers: list[dict]
    weight_bytes: int
    arena_bytes: int
    float_acc: float | None
    int_acc: float | None
    n_test: int
    input: str = ""  # what the model expects as input, as the device must deliver it
    split: str = "test"  # the images the accuracies are measured on: test, or val (held out)

    def text(self) -> str:
        lines = [f"model {self.name} for target {self.target}"]
        if self.input:
            lines.append(f"input: {self.input}")
        lines.append(f"{'layer':>5} {'op':<6}{'scheme':<16}{'shape':>20} {'bytes':>7} "
                     f"{'acc bound':>12}")
        for r in self.layers:
            lines.append(f"{r['index']:>5} {r['op']:<6}{r['scheme']:<16}"
                         f"{str(r['n_in']) + '->' + str(r['n_out']):>20} {r['bytes']:>7} "
                         f"{r['acc_bound']:>12}")
        lines.append(f"total weight bytes: {self.weight_bytes} ({self.weight_bytes / 1024:.2f} KB)")
        lines.append(f"arena bytes: {self.arena_bytes}")
        if self.int_acc is not None:
            split = "validation" if self.split == "val" else "test"
            lines.append(f"{split} accuracy on {self.n_test} images: float QAT "
                         f"{100 * self.float_acc:.2f}%, integer {100 * self.int_acc:.2f}%")
        return "\n".join(lines)


def model_report(model: IntModel, target: str, float_acc=None, int_acc=None, n_test=0,
                 input_desc: str = "", split: str = "test"):
    shapes, layers = model.shapes(), []
    for i, op in enumerate(model.ops):
        if op.c_op is not None:
            label, n_in, n_out = op.describe(shapes[i - 1], shapes[i])
            weighted = isinstance(op, Weighted)
            layers.append({"index": len(layers), "op": label,
                           "scheme": op.scheme if weighted else "-", "n_in": n_in,
                           "n_out": n_out, "bytes": op.nbytes,
                           "acc_bound": op.accumulator_bound(model.act_max) if weighted else "-"})
    return ExportReport(model.name, target, layers, model.weight_bytes, plan(model).bytes,
                        float_acc, int_acc, n_test, input_desc, split)


PROJECTS = ("ch32fun",)  # --project: a folder in an ecosystem's layout beside the export's files


def check_project(project: str | None, model_generative: bool | None, target: str) -> None:
    """Refuse a project the export cannot write (before any work where the model's kind is
    not known yet: ``model_generative`` None; True for any model that is no classifier)."""
    if project is None:
        return
    if project not in PROJECTS:
        raise BitmcuError(f"--project {project!r} is not known; use {choices(PROJECTS)}")
    if target not in ("ch32v003", "ch32v002"):
        raise BitmcuError(f"--project {project} builds for a CH32V003 or CH32V002: give "
                          f"--target ch32v003 or ch32v002, not {target!r}")
    if model_generative:
        raise BitmcuError(f"--project {project} runs a classifier on its test images; a decoder "
                          "goes on a chip as the electronic die (`bitmcu die`), a text model "
                          "through `bitmcu firmware`")


def write_ch32fun(t: Path, target: str) -> None:
    """t/ch32fun: a ch32fun project (Makefile including ch32fun.mk, funconfig.h, main.c) with
    the engine, the model and the test images beside it."""
    d = t / "ch32fun"
    d.mkdir()
    (d / "Makefile").write_text(template("ch32fun_Makefile").replace("@MCU@", target.upper()))
    (d / "funconfig.h").write_text(template("ch32fun_funconfig.h"))
    (d / "main.c").write_text(template("ch32fun_main.c"))
    for f in ("bitmcu.c", "bitmcu.h", "model.h", "test_images.h"):
        shutil.copy(t / f, d / f)


def write_export(model: IntModel, out: str | Path, test_x: np.ndarray | None,
                 test_y: np.ndarray | None,
                 report: ExportReport, target: str = "generic", n_images: int = 8,
                 command: str = "bitmcu export", lock: bool = True,
                 project: str | None = None) -> None:
    """Write an export folder for an integer model; all files appear at once or none do (the
    folder, firmware builds inside it included, is replaced as a whole). ``lock=False``: the
    caller holds ``out`` already. ``project``: also a folder in that ecosystem's layout
    (:data:`PROJECTS`). ``test_x`` and ``test_y``: a classifier's test images and labels (None
    for a decoder, which has none: its example generates ``n_images`` samples)."""
    check_project(project, not model.classifies, target)
    if test_x is None and model.classifies:
        raise BitmcuError("a classifier's export needs its test images")
    k = n_images if test_x is None else min(n_images, len(test_x))
    with writing(out, "model.npz", "export", lock) as t:
        (t / "model.h").write_text(model_header(model, command))
        if model.generative:  # seeds 1..k, classes in turn, the reference's image checksums
            batch = sample_inputs(model, k)
            images = model.input.reference(model, batch)
            (t / "test_samples.h").write_text(samples_header(batch[:, 0], batch[:, 1], command,
                                                             [fnv1a(im) for im in images]))
            (t / "main.c").write_text(DECODER_MAIN)
        elif model.is_text:  # seeds 1..k, the reference's lines
            seeds = np.arange(1, k + 1)
            (t / "test_lines.h").write_text(lines_header(seeds, text_lines(model, seeds),
                                                         command))
            (t / "main.c").write_text(TEXT_MAIN)
        else:
            _, ref_pred = reference.run(model, test_x[:k])
            (t / "test_images.h").write_text(images_header(test_x[:k], test_y[:k], ref_pred,
                                                           command))
            (t / "main.c").write_text(EXAMPLE_MAIN)
        (t / "Makefile").write_text(MAKEFILE)
        for f in ("bitmcu.c", "bitmcu.h"):
            shutil.copy(engine_dir() / f, t / f)
        model.save(t / "model.npz")
        if test_x is not None:  # test images for firmware builds (bitmcu firmware --images)
            m = min(100, len(test_x))
            np.savez_compressed(t / "test_set.npz", images=test_x[:m].reshape(m, -1),
                                labels=test_y[:m])
        if project == "ch32fun":
            write_ch32fun(t, target)
        (t / "report.txt").write_text(report.text() + "\n")
        (t / "report.json").write_text(json.dumps(
            {**report.__dict__, "target": target, "has_mul": TARGETS[target]}, indent=2) + "\n")


def export_test_images(export_dir: str | Path, n: int, what: str = "test images"):
    """The first ``n`` test images of an export (test_set.npz, up to 100) and the numpy
    reference's predictions of them (for `profile`'s ``images`` and ``expected``)."""
    d = Path(export_dir)
    if not (d / "test_set.npz").is_file():
        raise BitmcuError(f"{what}: {d} is not the firmware's export folder (no test_set.npz); "
                          "give it with --export")
    model = read_export(d)
    if not model.classifies:
        raise BitmcuError(f"{what}: {d} holds a generator, which has no test images")
    with np.load(d / "test_set.npz") as f:
        images = f["images"]
    if n > len(images):
        raise BitmcuError(f"{what} {n}: the export holds {len(images)} test images")
    _, pred = reference.run(model, images[:n])
    return images[:n], [int(p) for p in pred]


def read_export(export_dir: str | Path, check: bool = False) -> IntModel:
    """An export folder's integer model; with ``check``, model.h is compiled for this machine
    and must pass the engine's table check (its checksums included) and hold the checksums of
    model.npz's model: the C table that firmware compiles is the model the reference runs."""
    d = Path(export_dir)
    if not (d / "model.npz").is_file() or not (d / "model.h").is_file():
        raise BitmcuError(f"{d}: not a bitmcu export folder (needs model.npz and model.h from "
                          "`bitmcu export`)")
    model = IntModel.load(d / "model.npz")
    if check:
        try:
            host = HostModel((d / "model.h").read_text())
        except BitmcuError as e:
            raise BitmcuError(f"{d}: {e}; re-run `bitmcu export`") from None
        try:
            _, sums = host.check()
        finally:
            host.close()
        if (tuple(int(v) for v in sums[:2]) != table_sums(model)
                or int(sums[4]) != model.input.tables_sum()):
            raise BitmcuError(f"{d}: model.h and model.npz hold different models (their "
                              "checksums differ); re-run `bitmcu export`")
    return model


