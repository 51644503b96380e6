"""Benchmarks (not timed tests): train, export, verify, build firmware and profile; record figures.

  python benchmarks/bench.py reference [--seeds 0 1 2] [--jobs 2] [--set KEY=VALUE ...]
  python benchmarks/bench.py schemes [--epochs 20] [--jobs 2]

Each writes benchmarks/results/<name>.json and a markdown table <name>.md, and prints the table.
Full MNIST is read from $BITMCU_DATA (or ../shared/datasets). The code benchmarked is this
checkout's src/ (so a second git worktree benchmarks its own code), whatever is installed.
SIGTERM or Ctrl-C stops the training workers too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"torch {torch.__version__}")


RUN_DETAILS = {"train.threads", "train.device", "data.data_dir"}  # how a run ran, not what it is


def config_changes(stored: dict, wanted: dict) -> list[str]:
    """Keys whose value differs between a finished run's config and the one asked for."""
    from bitmcu.train.config import differences

    return [f"{k}: {a!r} in the run, {b!r} asked"
            for k, a, b in differences(stored, wanted, RUN_DETAILS)]


def one(config: str, overrides: list[str], out: str, threads: int) -> dict:
    """Train one model and take it through export, verify, firmware (both chips) and profile."""
    from bitmcu.apps.pipeline import export, verify
    from bitmcu.target.emulator import profile
    from bitmcu.target.firmware import build_firmware
    from bitmcu.train import load_checkpoint
    from bitmcu.train import train as train_run
    from bitmcu.train.config import load_config

    cfg = load_config(config, overrides + [f"train.threads={threads}"])
    run = Path(out)
    blob = load_checkpoint(run) if (run / "checkpoint.pt").exists() else None
    if blob is not None and (changes := config_changes(blob["cfg"].to_dict(), cfg.to_dict())):
        raise SystemExit(f"{run} holds a run made with other settings ({'; '.join(changes)}); "
                         "remove it or choose another --out")
    if blob is not None and blob["epoch"] == cfg.train.epochs:
        wall = sum(m["seconds"] for m in blob["metrics"])  # finished: evaluated, not trained
    else:
        t0 = time.perf_counter()
        run = train_run(cfg, run_dir=run, quiet=True, log=lambda *a: None)
        wall = time.perf_counter() - t0
        blob = load_checkpoint(run)
    rep = export(run, Path(out) / "export", target="ch32v003")
    ver = verify(run)  # raises on any logit mismatch
    res = {"run": out, "config": config, "overrides": overrides, "seed": cfg.seed,
           "scheme": cfg.model.scheme, "hidden": cfg.model.hidden, "epochs": blob["epoch"],
           "train_seconds": wall, "float_acc": ver.float_acc, "int_acc": ver.int_acc,
           "c_acc": ver.c_acc, "logit_mismatches": 0, "n_test": ver.n,
           "weight_bytes": rep.weight_bytes, "arena_bytes": rep.arena_bytes}
    for mcu in ("ch32v003", "ch32v002"):
        res[mcu] = _on_chip(Path(out) / "export", mcu, build_firmware, profile)
    return res


IMAGE_COUNTS = (4, 2, 1)  # test images embedded in the firmware: the first that fits the flash


def _on_chip(export_dir: Path, mcu: str, build_firmware, profile, images=IMAGE_COUNTS) -> dict:
    """Build and profile the firmware with as many embedded test images as fit the flash."""
    for n in images:
        try:
            fw = build_firmware(export_dir, mcu, n_images=n)
        except Exception as e:  # a model too big for the chip is a result, not a crash
            error = str(e).splitlines()[0]
            if "flash overflowed" in error and n != images[-1]:
                continue  # the images themselves may be what does not fit
            return {"error": error}
        prof = profile(fw.elf)
        return {"cycles": prof.median_cycles(), "flash": prof.flash["total"],
                "ram": prof.ram["total"], "stack": prof.ram["stack_peak"], "images": n,
                "kernels": fw.hot_loops,
                "mismatches": prof.mismatches, "segments": prof.segment_medians()}
    raise ValueError("no image counts to try")


def _fmt_chip(r: dict) -> str:
    if "error" in r:
        return r["error"]
    # result files written before the image count was recorded used the first count
    n = r.get("images", IMAGE_COUNTS[0])
    notes = [f"{n} images"] if n != IMAGE_COUNTS[0] else []
    if r.get("kernels") == "flash":  # auto placement: SRAM would overflow the RAM
        notes.append("kernels in flash")
    return f"{r['cycles']:,} / {r['flash']:,} / {r['ram']:,}" + (f" ({', '.join(notes)})" if notes else "")


def train_teacher(config: str, out: Path) -> dict:
    from bitmcu.train import load_checkpoint
    from bitmcu.train import train as train_run
    from bitmcu.train.config import load_config

    if (out / "checkpoint.pt").exists():
        blob = load_checkpoint(out)
        return {"run": str(out), "test_acc": blob["metrics"][-1]["test_acc"], "seconds": None,
                "epochs": blob["epoch"], "reused": True}
    t0 = time.perf_counter()
    run = train_run(load_config(config), run_dir=out, quiet=True, log=lambda *a: None)
    blob = load_checkpoint(run)
    return {"run": str(out), "test_acc": blob["metrics"][-1]["test_acc"],
            "seconds": time.perf_counter() - t0, "epochs": blob["epoch"], "reused": False}


def reference(args) -> None:
    extra, teacher = [], None
    if args.teacher:
        teacher = train_teacher(args.teacher, args.out / "teacher")
        extra = [f"train.teacher={teacher['run']}"]
    jobs = [(args.config, [f"seed={s}", *extra, *args.set], str(args.out / f"{args.config}-s{s}"))
            for s in args.seeds]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    with ProcessPoolExecutor(args.jobs) as ex:
        results = list(ex.map(one, *zip(*jobs, strict=True), [threads] * len(jobs)))
    accs = [r["float_acc"] for r in results]
    lines = [f"configs/{args.config}.yaml {' '.join(args.set)}, {date.today()}, "
             f"{machine()}, {args.jobs} runs in parallel with {threads} thread(s) each.", ""]
    if teacher:
        secs = f"{teacher['seconds'] / 60:.1f} min" if teacher["seconds"] else "reused"
        lines += [f"Teacher: configs/{args.teacher}.yaml, {teacher['epochs']} epochs, test "
                  f"accuracy {100 * teacher['test_acc']:.2f}%, training {secs} (once, shared by "
                  "the seeds).", ""]
    lines += [
             "| seed | epochs | train min | float acc | integer acc | C acc | logit mismatches "
             "| weight bytes | CH32V003 cycles / flash / RAM | CH32V002 cycles / flash / RAM |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['epochs']} | {r['train_seconds'] / 60:.1f} | "
            f"{100 * r['float_acc']:.2f}% | {100 * r['int_acc']:.2f}% | "
            f"{100 * r['c_acc']['nomul']:.2f}% | {r['logit_mismatches']} | {r['weight_bytes']:,} | "
            f"{_fmt_chip(r['ch32v003'])} | {_fmt_chip(r['ch32v002'])} |")
    lines.append(f"\nmedian float accuracy {100 * statistics.median(accs):.2f}%, median integer "
                 f"accuracy {100 * statistics.median(r['int_acc'] for r in results):.2f}%")
    for r in results:
        r["teacher"] = teacher
    _write(args.config + args.tag, results, lines)


def schemes(args) -> None:
    from bitmcu.quant import REGISTRY

    names = [s.name for s in REGISTRY.values() if s.exportable]
    jobs = [("reference", [f"model.scheme={n}", f"model.hidden={args.hidden}",
                           f"train.epochs={args.epochs}", f"name=scheme-{n}", *args.set],
             str(args.out / f"scheme-{n}")) for n in names]
    threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)
    with ProcessPoolExecutor(args.jobs) as ex:
        results = list(ex.map(one, *zip(*jobs, strict=True), [threads] * len(jobs)))
    lines = [f"Every scheme, 256-{'-'.join(str(h) for h in json.loads(args.hidden))}-10, "
             f"{args.epochs} epochs, seed 0, otherwise configs/reference.yaml; {date.today()}, "
             f"{machine()}.", "",
             "| scheme | weight bytes | float acc | integer acc | C acc | logit mismatches | "
             "CH32V003 cycles / flash / RAM | CH32V002 cycles / flash / RAM |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['scheme']} | {r['weight_bytes']:,} | {100 * r['float_acc']:.2f}% | "
            f"{100 * r['int_acc']:.2f}% | {100 * r['c_acc']['nomul']:.2f}% | "
            f"{r['logit_mismatches']} | {_fmt_chip(r['ch32v003'])} | {_fmt_chip(r['ch32v002'])} |")
    _write("schemes" + args.tag, results, lines)


def _write(name: str, results: list[dict], lines: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def _stop(signum, frame) -> None:
    """Stop the pool's workers with this process: the pool would otherwise wait for them."""
    for child in multiprocessing.active_children():
        child.terminate()
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    for name in ("reference", "schemes"):
        s = sub.add_parser(name)
        s.add_argument("--jobs", type=int, default=2)
        s.add_argument("--set", action="append", default=[])
        s.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
        s.add_argument("--tag", default="", help="suffix of the results file name")
        s.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    sub.choices["reference"].add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sub.choices["reference"].add_argument("--config", default="reference")
    sub.choices["reference"].add_argument("--teacher", help="config of a teacher to train first "
                                          "and distill from (e.g. teacher-cnn)")
    sub.choices["schemes"].add_argument("--epochs", type=int, default=20)
    sub.choices["schemes"].add_argument("--hidden", default="[40,40]")
    a = p.parse_args()
    if not os.environ.get("BITMCU_DATA") and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["BITMCU_DATA"] = str(ROOT.parent / "shared" / "datasets")
    {"reference": reference, "schemes": schemes}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
