"""Fuzz the C engine's model tables: thousands of field mutations under ASan/UBSan.

Each trial changes one to three fields of a copy of the table (engine/fuzz_table.c), calls
``bitmcu_check`` and runs the tables that check OK. A sanitizer report (an out-of-bounds read,
undefined behaviour) aborts the harness and raises here; otherwise the outcome is counted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import BitmcuError
from .codegen import model_header
from .hostc import SANITIZE, STATUS, WARNINGS, engine_dir, find_cc
from .ir import IntModel


@dataclass
class FuzzResult:
    trials: int
    status: dict[str, int]  # bitmcu_check's answers by name
    ran: int  # tables that checked OK and were run
    changed: int  # of those, runs whose output differs from the unmutated table's
    neutral_changed: int  # of those, runs where only output-neutral fields were mutated
    bad_emit: int  # decoder bands outside the image

    def text(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.status.items() if v)
        return (f"{self.trials} mutated tables: {counts}; {self.ran} ran, {self.changed} with "
                f"another output, no sanitizer report")


def fuzz_tables(model: IntModel, trials: int = 2000, seed: int = 1, sums: bool = True,
                has_mul: bool = True, cc: str | None = None) -> FuzzResult:
    """Mutate ``model``'s C table ``trials`` times; ``sums``: bitmcu_check also compares the
    checksums (without: only the fields' invariants are checked, and valid tables are run)."""
    if trials < 1:
        raise BitmcuError(f"fuzz trials must be at least 1, not {trials}")
    cc = find_cc(cc)
    with tempfile.TemporaryDirectory(prefix="bitmcu-fuzz-") as tmp:
        d = Path(tmp)
        (d / "model.h").write_text(model_header(model, "bitmcu fuzz"))
        for f in ("bitmcu.c", "bitmcu.h", "fuzz_table.c"):
            shutil.copy(engine_dir() / f, d / f)
        exe = d / "fuzz_table"
        flags = [f"-DBITMCU_HAS_MUL={int(has_mul)}", f"-I{d}", *SANITIZE]
        for args in ([cc, *WARNINGS, *flags, "-c", str(d / "bitmcu.c"), "-o", str(d / "e.o")],
                     [cc, "-std=c99", *flags, str(d / "fuzz_table.c"), str(d / "e.o"), "-o",
                      str(exe)]):
            r = subprocess.run(args, capture_output=True, text=True)
            if r.returncode != 0:
                raise BitmcuError(f"compiling the fuzz harness failed:\n{r.stderr.strip()}")
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        r = subprocess.run([str(exe), str(trials), str(seed), str(int(sums))],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise BitmcuError(f"the engine failed under mutation (exit {r.returncode}):\n"
                              f"{r.stderr[-3000:]}")
    out = json.loads(r.stdout)
    names = [STATUS[i][0] for i in range(len(STATUS))] + ["unknown status"]
    return FuzzResult(out["trials"], dict(zip(names, out["status"], strict=True)), out["ran"],
                      out["changed"], out["neutral_changed"], out["bad_emit"])
