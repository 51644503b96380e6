"""From a trained run to deployment: :func:`export` and :func:`verify` a run (the trained float
model's figures beside the integer model's), and the whole flow in one call (:func:`run_all`:
train -> export -> verify -> firmware -> profile)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..core.errors import BitmcuError, choices
from ..core.outdir import check_target, locked
from ..deploy import reference
from ..deploy.export import (
    MAX_IMAGES,
    MISMATCH_TOLERANCE,
    TARGETS,
    ExportReport,
    check_project,
    model_report,
    write_export,
)
from ..deploy.ir import IntModel
from ..deploy.verify import (
    DecoderVerifyResult,
    TextVerifyResult,
    VerifyResult,
    in_chunks,
    sample_inputs,
    verify_model,
    verify_samples,
    verify_text,
)
from ..target.chips import get_chip
from ..target.emulator import measure_export
from ..target.firmware import GCC
from ..train import evaluate as eval_float
from ..train import load_data, model_from_checkpoint, train
from ..train.config import load_config
from ..train.lower import load_int_model


def export(run: str | Path, out: str | Path, target: str = "generic", data_dir: str | None = None,
           n_images: int = 8, command: str = "bitmcu export", evaluate: bool = True,
           allow_mismatch: bool = False, project: str | None = None) -> ExportReport:
    """Write model.h, bitmcu.c/.h, test_images.h, main.c, Makefile, model.npz, report.{txt,json}
    (and, with ``project``, a folder in that ecosystem's layout: ch32fun/).

    The files are written into a temporary folder and moved into ``out`` only when all of them
    are complete, so a failed export never leaves a half model behind. ``out`` is locked for
    the whole export. An integer model whose accuracy differs from the float model's by more
    than :data:`MISMATCH_TOLERANCE` is refused unless ``allow_mismatch``: the conversion did not
    keep the model the run trained.
    """
    if target not in TARGETS:
        raise BitmcuError(f"--target {target!r} is not known; use {choices(TARGETS)}")
    if not 1 <= n_images <= MAX_IMAGES:
        raise BitmcuError(f"--images {n_images}: embed 1..{MAX_IMAGES} test images (a chip's "
                          "firmware holds a few; test_set.npz keeps 100 for profiling)")
    check_project(project, None, target)
    out = Path(out).absolute()
    with locked(out):  # held from the start: a second export into `out` is refused at once
        check_target(out, "model.npz", "export")  # before the minutes of work
        return _export(run, out, target, data_dir, n_images, command, evaluate, allow_mismatch,
                       project)


def _export(run, out: Path, target: str, data_dir, n_images: int, command: str, evaluate: bool,
            allow_mismatch: bool, project: str | None) -> ExportReport:
    model, blob = load_int_model(run)
    check_project(project, not model.classifies, target)
    cfg = blob["cfg"]
    if data_dir:
        cfg.data.data_dir = data_dir
    float_acc = int_acc = test_x = test_y = None
    n_test, split = 0, "test"
    if model.classifies:  # a generator has no test images: its data is not needed
        data = load_data(cfg)
        test_x, test_y, split = data.test_x.numpy(), data.test_y.numpy(), data.split
    if evaluate and model.classifies:  # a generator is judged by `bitmcu judge`
        float_acc = eval_float(model_from_checkpoint(blob), data.test_x, data.test_y).acc
        pred = in_chunks(lambda x: reference.run(model, x)[1], test_x, "integer reference")
        int_acc = float((pred == test_y).mean())
        n_test = len(test_y)
        if abs(float_acc - int_acc) > MISMATCH_TOLERANCE and not allow_mismatch:
            raise BitmcuError(
                f"{blob['path']}: the integer model's {split} accuracy "
                f"{100 * int_acc:.2f}% differs from the float model's {100 * float_acc:.2f}% "
                f"by more than {100 * MISMATCH_TOLERANCE:g} points: the conversion does not "
                "keep this model (weights far outside the trained range?); nothing written. "
                "--allow-mismatch exports it anyway")
    if model.is_text:
        inp = (f"one token per step, of {model.n_classes}: end of line and "
               f"{model.input.vocab[1:]!r}")
    elif model.generative:
        inp = model.input.describe_prior(model)
    else:
        inp = cfg.data.input_description()
    report = model_report(model, target, float_acc, int_acc, n_test, inp, split)

    write_export(model, out, test_x, test_y, report, target, n_images, command, lock=False,
                 project=project)
    return report


def verify(run: str | Path, data_dir: str | None = None, limit: int | None = None,
           sanitize: bool = False, cc: str | None = None
           ) -> VerifyResult | DecoderVerifyResult | TextVerifyResult:
    """A run's integer model: C == reference on every test image (a decoder: on ``limit``
    samples, 1000 by default), with the trained float model's accuracy beside it."""
    model, blob = load_int_model(run)
    if model.is_text:
        return verify_text(model, 1000 if limit is None else limit, sanitize, cc)
    if model.generative:
        return verify_decoder(model, blob, 1000 if limit is None else limit, sanitize, cc)
    cfg = blob["cfg"]
    if data_dir:
        cfg.data.data_dir = data_dir
    data = load_data(cfg)
    x, y = data.test_x, data.test_y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    float_acc = eval_float(model_from_checkpoint(blob), x, y).acc
    return verify_model(model, x.numpy(), y.numpy(), sanitize, cc, float_acc)


def verify_decoder(model: IntModel, blob: dict, n: int, sanitize: bool = False,
                   cc: str | None = None) -> DecoderVerifyResult:
    """:func:`verify_samples`, and how many of the float (QAT) decoder's images equal the
    reference's."""
    result, ref = verify_samples(model, n, sanitize, cc)
    seeds, classes = sample_inputs(model, n).T
    z = model.input.latents(seeds, classes)
    with torch.no_grad():
        f = model_from_checkpoint(blob).decode(torch.from_numpy(z.astype(np.float32)),
                                               torch.from_numpy(classes)).numpy()
    result.float_equal = int((f.astype(np.uint8) == ref).all(axis=(1, 2)).sum())
    return result


def run_all(config: str | None, overrides: list[str], out: Path | None, mcu: str = "ch32v003",
            quiet: bool = False, log=print) -> str:
    """Run every step; return a one-screen summary (also written to RUN/summary.json)."""
    mcu = get_chip(mcu).name  # an unknown chip is refused before the minutes of training
    cfg = load_config(config, overrides)
    run = train(cfg, run_dir=out, quiet=quiet, log=log)
    exp = run / "export"
    log(f"exporting to {exp}/ ...")
    rep = export(run, exp, target=mcu, command=f"bitmcu run {config or ''}".strip())
    log("verifying the C engine against the numpy reference on the test set ...")
    ver = verify(run)
    if isinstance(ver, VerifyResult):
        summary = {"run": str(run), "weight_bytes": rep.weight_bytes, "float_acc": ver.float_acc,
                   "int_acc": ver.int_acc, "c_acc": ver.c_acc, "n_test": ver.n}
        checked = (f"accuracy:   float {100 * ver.float_acc:.2f}%, integer "
                   f"{100 * ver.int_acc:.2f}%, C {100 * ver.c_acc['nomul']:.2f}% on {ver.n} test "
                   "images (C logits == reference: yes)")
    else:  # a generator: C == reference on its samples
        summary = {"run": str(run), "weight_bytes": rep.weight_bytes, "verified": ver.text()}
        checked = f"verified:   {ver.text()}"
    lines = [f"run:        {run}", checked,
             f"weights:    {rep.weight_bytes:,} bytes, arena {rep.arena_bytes:,} bytes"]
    if shutil.which(GCC) is None:
        lines.append(f"firmware:   skipped ({GCC} not installed)")
    else:
        log(f"building {mcu} firmware and profiling it in the emulator ...")
        got = measure_export(exp, mcu, n_images=4, exact=False)  # the summary says if not
        fw, prof = got.fw, got.prof
        med = prof.median_cycles()
        summary.update({"mcu": mcu, "elf": fw.elf, "profile": prof.to_dict()})
        lines += [
            f"firmware:   {fw.elf}",
            f"{mcu}:   flash {prof.flash['total']:,}/{prof.flash['size']:,} bytes, RAM "
            f"{prof.ram['total']:,}/{prof.ram['size']:,} bytes (peak stack "
            f"{prof.ram['stack_peak']})",
            f"speed:      {med:,} cycles per inference = {med / 48e3:.2f} ms at 48 MHz "
            f"(emulated; outputs == reference: {'yes' if prof.mismatches == 0 else 'NO'})",
        ]
        if prof.is_text:
            per = prof.cycles_per_token()
            lines.append(f"text:       {per:,} cycles per token, {48e6 / per:,.0f} characters "
                         "per second at 48 MHz")
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return "\n".join(lines)
