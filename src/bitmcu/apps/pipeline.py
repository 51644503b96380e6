"""The whole flow in one call: train -> export -> verify -> firmware -> profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..deploy.export import export
from ..deploy.verify import verify
from ..target.chips import get_chip
from ..target.emulator import measure_export
from ..target.firmware import GCC
from ..train import train
from ..train.config import load_config


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
    summary = {"run": str(run), "weight_bytes": rep.weight_bytes, "float_acc": ver.float_acc,
               "int_acc": ver.int_acc, "c_acc": ver.c_acc, "n_test": ver.n}
    lines = [
        f"run:        {run}",
        f"accuracy:   float {100 * ver.float_acc:.2f}%, integer {100 * ver.int_acc:.2f}%, C "
        f"{100 * ver.c_acc['nomul']:.2f}% on {ver.n} test images (C logits == reference: yes)",
        f"weights:    {rep.weight_bytes:,} bytes, arena {rep.arena_bytes:,} bytes",
    ]
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
            f"(emulated; predictions == reference: {'yes' if prof.mismatches == 0 else 'NO'})",
        ]
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return "\n".join(lines)
