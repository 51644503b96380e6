"""The ``bitmcu`` command line: thin over the library API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .core.errors import BitmcuError


def _split_of(m: dict) -> tuple[str, str]:
    """Metrics key prefix and name of the split a run evaluated on (data.validation: val)."""
    return ("val", "validation") if "val_loss" in m else ("test", "test")


def _cmd_train(a) -> int:
    from .train import train
    from .train.config import load_config

    if a.resume:
        if a.config:
            raise BitmcuError(f"--resume continues a run with its saved config; drop {a.config!r}")
        run = train(None, resume=a.resume, overrides=a.set, quiet=a.quiet)
    else:
        cfg = load_config(a.config, a.set)
        run = train(cfg, run_dir=a.out, quiet=a.quiet)
    _summary(run)
    return 0


def _summary(run: Path) -> None:
    from .train import load_checkpoint, model_from_checkpoint
    from .train.stats import layer_stats

    blob = load_checkpoint(run)
    m = blob["metrics"][-1] if blob["metrics"] else {}
    nbytes = sum(s.bytes for s in layer_stats(model_from_checkpoint(blob)))
    s, name = _split_of(m)
    if f"{s}_bpc" in m:  # a character model
        print(f"done: {blob['epoch']} epochs, {name} {m[s + '_bpc']:.4f} bits per character, "
              f"{nbytes} weight bytes; lines: bitmcu sample {run}")
    elif f"{s}_mse" in m:  # a decoder
        kl = (f"KL {m[s + '_kl']:.2f}, " if f"{s}_kl" in m else  # none: factor latents
              f"MMD {m[s + '_mmd']:.4f}, " if f"{s}_mmd" in m else "")
        print(f"done: {blob['epoch']} epochs, {name} squared error per pixel {m[s + '_mse']:.5f}, "
              f"{kl}{nbytes} weight bytes; samples: bitmcu sample {run} --out grid.png")
    else:
        print(f"done: {blob['epoch']} epochs, {name} accuracy {100 * m.get(s + '_acc', 0):.2f}%, "
              f"{nbytes} weight bytes")
    files = [f for f in ("checkpoint.pt", "metrics.jsonl", "curves.png", "weights.png",
                         "first_layer.png") if (Path(run) / f).is_file()]
    print(f"results in {run}/ ({', '.join(files)})")


def _cmd_eval(a) -> int:
    from .train import evaluate, load_checkpoint, load_data, model_from_checkpoint
    from .train.plots import plot_confusion

    blob = load_checkpoint(a.run)
    cfg = blob["cfg"]
    if cfg.model.family == "decoder":
        raise BitmcuError(f"{a.run}: a decoder (model.family decoder) has no test accuracy; "
                          f"use `bitmcu sample {a.run} --out grid.png` or `bitmcu verify`")
    if a.data_dir:
        cfg.data.data_dir = a.data_dir
    model = model_from_checkpoint(blob)
    if cfg.model.family == "charrnn":
        from .train.text import bigram_bpc, evaluate_text, load_text_data

        data = load_text_data(cfg)
        ev = evaluate_text(model, data.test, data)
        print(f"{data.split} lines: {ev['bpc']:.4f} bits per character (loss {ev['loss']:.4f} "
              f"nats per token) on {len(data.test)} lines; bigram baseline "
              f"{bigram_bpc(data, data.test):.4f}")
        return 0
    data = load_data(cfg)
    ev = evaluate(model, data.test_x, data.test_y)
    cm = ev.confusion(data.n_classes)
    print(f"test accuracy: {100 * ev.acc:.2f}% ({int((ev.pred == ev.labels).sum())}/{len(ev.pred)})"
          f", loss {ev.loss:.4f}")
    if data.n_classes <= 20:
        w = max(5, len(str(cm.max())) + 1)
        print("confusion matrix (rows: true, columns: predicted)")
        print("     " + "".join(f"{j:>{w}}" for j in range(data.n_classes)))
        for i, row in enumerate(cm):
            print(f"{i:>4} " + "".join(f"{v:>{w}}" for v in row))
    out = blob["path"].parent / "confusion.png"
    plot_confusion(cm, out)
    print(f"confusion matrix plot: {out}")
    return 0


def _cmd_info(a) -> int:
    from .train import load_checkpoint, model_from_checkpoint
    from .train.stats import format_info, layer_stats

    blob = load_checkpoint(a.run)
    cfg = blob["cfg"]
    m = blob["metrics"][-1] if blob["metrics"] else {}
    s, name = _split_of(m)
    score = (f"{name} {m[s + '_bpc']:.4f} bits per character" if s + "_bpc" in m else
             f"{name} accuracy {100 * m.get(s + '_acc', 0):.2f}%")
    print(f"run {blob['path'].parent}: {cfg.name}, {blob['epoch']} epochs, {score}, norm "
          f"{cfg.model.norm}, scale {cfg.model.scale}, clip {cfg.model.clip}")
    print(format_info(layer_stats(model_from_checkpoint(blob))))
    return 0


def _cmd_schemes(a) -> int:
    from .quant import REGISTRY

    print(f"{'name':<16}{'id':>3} {'bits':>5} {'levels':>7}  C kernel")
    for s in REGISTRY.values():
        bits = "1.6" if s.name == "ternary" else str(s.bits)
        print(f"{s.name:<16}{s.id:>3} {bits:>5} {len(s.levels) or '-':>7}  {s.c_kernel or '-'}")
    return 0


def count(option: str):
    """An argparse type: a whole number >= 1, else one clear error naming the option."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1 or str(n) != text.strip().lstrip("+"):
            raise BitmcuError(f"{option} {text}: give a whole number >= 1")
        return n
    return parse


def seed(option: str):
    """An argparse type: a seed 0..2^32-1, else one clear error naming the option."""
    from .core.rng import SEED_MAX

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = -1
        if not 0 <= n <= SEED_MAX:
            raise BitmcuError(f"{option} {text}: give a whole number 0..{SEED_MAX:,}")
        return n
    return parse


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (quantization-aware)",
                       description="Train a model. CONFIG is a YAML file or a name under configs/.")
    p.add_argument("config", nargs="?", help="YAML config file or named config (default: defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="RUN", help="resume an interrupted run from its last epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_train)


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="test accuracy and confusion matrix of a run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--data-dir", help="folder with the data sets (overrides the run's)")
    p.set_defaults(func=_cmd_eval)


def add_info(sub) -> None:
    p = sub.add_parser("info", help="per-layer scheme, parameters, bits, bytes and entropy")
    p.add_argument("run", help="run directory or checkpoint file")
    p.set_defaults(func=_cmd_info)


def add_schemes(sub) -> None:
    p = sub.add_parser("schemes", help="list the weight quantization schemes")
    p.set_defaults(func=_cmd_schemes)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write the integer model as C (model.h, engine, example)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--target", default="generic",
                   help="generic | ch32v003 | ch32v002 | cortex-m0 (default: generic)")
    p.add_argument("--data-dir", help="folder with the data sets (overrides the run's)")
    p.add_argument("--images", type=count("--images"), default=8, help="test images to embed "
                   "(default 8, at most 10,000)")
    p.add_argument("--allow-mismatch", action="store_true", help="export even when the integer "
                   "model's accuracy differs from the float model's by more than 2 points")
    p.add_argument("--project", help="also write OUT/ch32fun/: a ch32fun project (Makefile, "
                   "funconfig.h, main.c printing on USART1) built and flashed with `make flash` "
                   "(a classifier; --target ch32v003 or ch32v002)")
    p.set_defaults(func=_cmd_export)


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="host C engine == numpy reference on the whole test set "
                       "(decoders: every pixel of N generated samples)")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--data-dir", help="folder with the data sets (overrides the run's)")
    p.add_argument("--limit", type=count("--limit"), help="only the first N test images (decoders: N "
                   "(seed, class) samples, default 1000)")
    p.add_argument("--sanitize", action="store_true",
                   help="build with AddressSanitizer and UndefinedBehaviorSanitizer")
    p.set_defaults(func=_cmd_verify)


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="a grid of images generated by a decoder, a row per "
                       "class; or lines of text generated by a character model")
    p.add_argument("run", help="decoder or character model (charrnn) run directory or "
                   "checkpoint file")
    p.add_argument("--per-class", type=count("--per-class"), default=8, help="samples per class (default 8)")
    p.add_argument("--engine", default="int", help="float (the QAT decoder) | int (the numpy "
                   "reference, default) | c (the host-compiled C engine; a text model: int or c)")
    p.add_argument("--lines", type=count("--lines"), default=10,
                   help="a text model: lines to generate (default 10)")
    p.add_argument("--prefix", help="a text model: the characters each line starts with, "
                   "continued by the model")
    p.add_argument("--seed", type=seed("--seed"), default=1, help="seed of the first sample; "
                   "the next ones count up (default 1)")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0..2 (default: the "
                   "run's model.temperature; 1 = the prior it was trained with, or a text "
                   "model's own distribution)")
    p.add_argument("--out", type=Path, help="FILE.png: a grid, a row per class; "
                   "FILE.npz: the raw samples (uint8 images, classes, seeds, temperature, "
                   "engine) for any outside tool; a text model: FILE.txt (optional: the lines "
                   "are printed)")
    p.set_defaults(func=_cmd_sample)


def add_judge(sub) -> None:
    p = sub.add_parser("judge", help="oracle accuracy, diversity, memorization and Frechet "
                       "distance of a decoder's samples, per engine",
                       description="Generate K samples per class with each engine and judge "
                       "them by an independent classifier of the real images (the oracle).")
    p.add_argument("run", help="decoder run directory or checkpoint file")
    p.add_argument("--oracle", action="append", help="a classifier run that judges "
                   "(repeatable: each is a judge; default: the shipped models/oracle-<data set> "
                   "and -b, else runs/oracle-<data set>, trained by `bitmcu train oracle-<data "
                   "set>`)")
    p.add_argument("--per-class", type=count("--per-class"), default=1000,
                   help="samples per class (default 1000)")
    p.add_argument("--engines", default="float,int,c", help="comma-separated: float, int, c "
                   "(default all three)")
    p.add_argument("--seed", type=seed("--seed"), default=1,
                   help="seed of the first sample (default 1)")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0..2 (default: the "
                   "run's model.temperature)")
    p.add_argument("--data-dir", help="folder with the data sets (overrides the run's)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--lines", type=count("--lines"), default=1000, help="a text model: lines "
                   "to sample (default 1000); its --oracle is a larger float character model of "
                   "the same lines (default: the shipped models/judge-<data set>)")
    p.set_defaults(func=_cmd_judge)


def add_firmware(sub) -> None:
    p = sub.add_parser("firmware", help="build CH32V003/CH32V002 firmware from an export folder",
                       description="Build a bare-metal ELF (+ .bin/.hex) with the engine, the "
                       "model and N embedded test images.")
    p.add_argument("export_dir", help="folder written by `bitmcu export`")
    p.add_argument("--mcu", required=True, help="ch32v003 | ch32v002")
    p.add_argument("--images", type=count("--images"), default=4, help="test images to embed (default 4)")
    p.add_argument("--hot-loops", default="auto", help="auto | sram | flash: where the kernels "
                   "run (default auto: SRAM, the faster, unless the RAM would overflow)")
    p.add_argument("--led", metavar="PIN", help="an LED pin (to ground through a resistor) the "
                   "firmware toggles at each inference, e.g. PC0 (default: none); every "
                   "firmware prints its results on USART1 TX, PD5, 115200 8N1")
    p.add_argument("--out", type=Path, help="output folder (default EXPORT_DIR/firmware-MCU)")
    p.set_defaults(func=_cmd_firmware)


def add_profile(sub) -> None:
    p = sub.add_parser("profile", help="run firmware in the emulator: cycles, flash, RAM",
                        description="Run an ELF in Unicorn with the cycle model; check every "
                        "prediction against the numpy reference.")
    p.add_argument("elf", help="firmware.elf (with firmware.json beside it, or give --mcu)")
    p.add_argument("--mcu", help="ch32v003 | ch32v002 (default: from firmware.json)")
    p.add_argument("--json", type=Path, help="also write the profile as JSON here")
    p.add_argument("--test-images", type=count("--test-images"), metavar="N",
                    help="run the first N test images of the export (up to 100), written in "
                    "turn over the embedded ones in the emulated flash: cycles over more images "
                    "than the chip's flash holds")
    p.add_argument("--export", type=Path, help="--test-images: the firmware's export folder "
                    "(default: the folder above the ELF's)")
    p.add_argument("--max-instructions", type=count("--max-instructions"), default=None,
                    help="stop a firmware that runs longer (default 500,000,000)")
    p.set_defaults(func=_cmd_profile)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="train -> export -> verify -> firmware -> profile, one summary")
    p.add_argument("config", nargs="?", help="YAML config file or named config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--mcu", default="ch32v003", help="ch32v003 | ch32v002 (default ch32v003)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_run)


def add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="find the most accurate model within a chip's flash, RAM and cycle budget",
        description="Run an Optuna study over a search space file: each trial's firmware is "
        "sized before training (candidates too big are pruned at no cost), then trained with "
        "pruning, exported, verified, built and profiled; trials are scored on a validation "
        "split held out from the training data. --report and --best read a study at any time.")
    p.add_argument("space", nargs="?", help="search space file (YAML; see the README, Searching)")
    p.add_argument("--mcu", default="ch32v003", help="ch32v003 | ch32v002 (default ch32v003)")
    p.add_argument("--max-flash", type=count("--max-flash"), metavar="B",
                    help="flash budget in bytes (default: the chip's)")
    p.add_argument("--max-ram", type=count("--max-ram"), metavar="B",
                    help="RAM budget in bytes (default: the chip's)")
    p.add_argument("--max-cycles", type=count("--max-cycles"), metavar="N",
                    help="cycles per inference (default: no limit); with --best: choose "
                    "among trials this fast")
    p.add_argument("--trials", type=count("--trials"), metavar="N",
                    help="stop once the study has N trials (listed trials count; default 20, "
                    "or as many as a space without searched keys lists)")
    p.add_argument("--timeout", type=count("--timeout"), metavar="S",
                    help="start no new trial after S seconds")
    p.add_argument("--workers", type=count("--workers"), default=1, metavar="K",
                    help="worker processes on this machine (default 1)")
    p.add_argument("--threads", type=count("--threads"), metavar="T",
                    help="torch threads per worker (default: CPU cores / workers)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage: sqlite:///FILE.db or "
                    "postgresql://USER:PASS@HOST/DB (default: sqlite file ROOT/STUDY.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the space file's name)")
    p.add_argument("--root", type=Path, default=Path("runs/search"),
                    help="folder for the trials' runs and the default storage (runs/search)")
    p.add_argument("--heartbeat", type=count("--heartbeat"), default=60, metavar="S",
                    help="seconds between worker heartbeats; a trial silent for 2x is failed "
                    "and run again (default 60)")
    p.add_argument("--report", metavar="STUDY", help="print a study's trials and Pareto front "
                    "and write report.txt, trials.json, pareto.png")
    p.add_argument("--best", metavar="STUDY", help="retrain a study's most accurate trial "
                    "within its budget (and --max-cycles) for --seeds, on the whole training "
                    "set, and export and profile each")
    p.add_argument("--seeds", default="0,1,2", help="--best: seeds to train (default 0,1,2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="--best: override a config key of the chosen trial (repeatable)")
    p.add_argument("--out", type=Path, help="--report/--best: output folder "
                    "(default ROOT/STUDY/report or ROOT/STUDY/best)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines")
    p.set_defaults(func=_cmd_search)


def add_die(sub) -> None:
    p = sub.add_parser("die", help="the electronic die: firmware for a dice decoder, and its "
                       "emulation down to the display",
                       description="Build the die firmware (die.elf/.bin/.hex/.map, die.json) "
                       "of a six-class dice decoder run or export; with --emulate N, roll it N "
                       "times in the emulator (the start-up roll, then scripted presses) and "
                       "write every frame the emulated SSD1306 shows.")
    p.add_argument("source", help="decoder run directory or its export folder")
    p.add_argument("--mcu", default="ch32v003", help="ch32v003 (default) | ch32v002")
    p.add_argument("--button", default="PC3", help="button pin, to ground (default PC3)")
    p.add_argument("--dither", default="contrast", help="contrast (4x4 Bayer after a levels "
                   "curve that darkens faint grey, default) | ordered (4x4 Bayer) | threshold")
    p.add_argument("--debounce-ms", type=int, default=20, help="button debounce, 1..500 ms "
                   "(default 20)")
    p.add_argument("--led", metavar="PIN", help="an LED pin the die toggles at each roll "
                   "(default: none); every roll is also printed on USART1 TX, PD5, 115200 8N1")
    p.add_argument("--display-timeout", type=float, default=10.0, metavar="S",
                   help="the display sleeps S seconds after the button is let go (0: never; "
                   "0.48..3600, in steps of 0.48 s; default 10)")
    p.add_argument("--display-power", metavar="PIN", default="PC4", help="a pin that switches "
                   "the display's supply through a P-MOSFET (gate on the pin, pulled up; low = "
                   "on): off after the display's timeout, on at the next press, so that the "
                   "idle current has no display in it (default PC4; without a switch the "
                   "display just sleeps; none: no pin)")
    p.add_argument("--press-gap", type=float, default=0.03, metavar="S", help="with --emulate: "
                   "seconds from one roll's end to the next press (default 0.03; longer than "
                   "the display's timeout emulates rolls of a dark display)")
    p.add_argument("--rolls-per-day", type=float, default=20.0, help="with --emulate: the use "
                   "the battery life is for (default 20 rolls a day, each face shown until the "
                   "display's timeout)")
    p.add_argument("--battery-mah", type=float, default=220.0, help="with --emulate: the "
                   "battery's capacity (default 220 mAh, a CR2032)")
    p.add_argument("--out", type=Path, help="output folder (default: SOURCE-die)")
    p.add_argument("--emulate", type=count("--emulate"), metavar="N", help="emulate N rolls; frames, contact "
                   "sheet, GIF and rolls.json go to OUT/rolls")
    p.add_argument("--seed", type=seed("--seed"), default=0, help="seed of the emulated ADC "
                   "noise and display memory (default 0)")
    p.add_argument("--oracle", action="append", help="with --emulate: a dice classifier run "
                   "that judges the frames (repeatable; default: the shipped models/oracle-dice "
                   "and -b), beside the pip counter")
    p.set_defaults(func=_cmd_die)


COMMANDS = [add_train, add_eval, add_info, add_schemes, add_export, add_verify, add_sample,  # help order
            add_judge, add_firmware, add_profile, add_run, add_search, add_die]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitmcu", description=__doc__.strip().splitlines()[0]
                                if __doc__ else "bitmcu")
    p.add_argument("--version", action="version", version=f"bitmcu {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def _cmd_die(a) -> int:
    import json

    from .apps.die.emulate import check_frames, drawn_lines, judge_frames, roll_die, write_frames
    from .apps.die.firmware import DieOptions, build_die

    if a.oracle and a.emulate is None:
        raise BitmcuError("--oracle judges the emulated frames: give --emulate N with it")
    if not 0 < a.rolls_per_day <= 10_000:
        raise BitmcuError(f"--rolls-per-day {a.rolls_per_day:g}: must be > 0 and <= 10,000")
    if not 0 < a.battery_mah <= 100_000:
        raise BitmcuError(f"--battery-mah {a.battery_mah:g}: must be > 0 and <= 100,000")
    if not 0 < a.press_gap <= 86_400:
        raise BitmcuError(f"--press-gap {a.press_gap:g}: must be > 0 and <= 86,400 seconds")
    info = build_die(a.source, a.mcu, a.out, DieOptions(a.button, a.dither, a.debounce_ms,
                                                        a.display_timeout, a.led,
                                                        None if a.display_power.lower() ==
                                                        "none" else a.display_power))
    print(info.text())
    if a.emulate is None:
        print(f"emulate it with: bitmcu die {a.source} --emulate 12")
        return 0
    run = roll_die(Path(info.elf).parent, rolls=a.emulate, seed=a.seed, progress=True,
                   gap_ms=a.press_gap * 1e3)
    print(run.text())
    files = write_frames(run, Path(info.elf).parent / "rolls")
    proj = run.projection(a.rolls_per_day, a.battery_mah)
    if proj is not None:
        from .apps.die.energy import plot_budget

        print(proj.text())
        plot_budget(proj, Path(files["json"]).with_name("energy.png"))
    bad = check_frames(run)
    if info.is_text:
        if a.oracle:
            raise BitmcuError("--oracle judges a picture die's faces; a text die's lines are "
                              "judged by `bitmcu judge RUN`")
        lines = drawn_lines(run)
        print("  lines: " + ", ".join(lines))
        extra, unit, drawn = {"lines": lines}, ("press", "presses"), "line"
    else:
        j = judge_frames(run, a.oracle)
        print("  judges of the frames: " + ", ".join(f"{Path(n).name} {100 * v:.2f}%"
                                                     for n, v in j["judges"].items())
              + f"; strict (every judge reads the face drawn): {100 * j['strict']:.2f}%; "
              "distinct frames per face: " + ", ".join(f"{f}: {100 * v['distinct']:.0f}%"
                                                      for f, v in j["per_face"].items()
                                                      if v["rolls"]))
        extra, unit, drawn = {"judges": j}, ("roll", "rolls"), "picture"
    path = Path(files["json"])
    report = json.loads(path.read_text())
    report.update(extra)
    if proj is not None:
        report["energy"] = proj.to_dict()
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {files['sheet']}, {files['gif']}, {files['json']}"
          + (f", {path.with_name('energy.png')}" if proj is not None else "")
          + f" and one PNG per {unit[0]}")
    if bad:
        raise BitmcuError(f"{len(bad)} of {len(run.rolls)} frames differ from the numpy "
                          f"reference's (rolls {bad[:10]})")
    print(f"every frame equals the numpy reference's {drawn} ({len(run.rolls)} {unit[1]})")
    return 0


def _cmd_firmware(a) -> int:
    from .target.firmware import build_firmware

    info = build_firmware(a.export_dir, a.mcu, a.out, a.images, a.hot_loops, led=a.led)
    print(f"built {info.elf} (+ .bin, .hex) for {info.mcu}: {info.n_images} test images, "
          f"kernels in {info.hot_loops}"
          + (f" ({info.hot_loops_note})" if info.hot_loops_note else "")
          + (f", worst-case stack {info.stack_bound} bytes" if info.stack_bound else ""))
    print(f"profile it with: bitmcu profile {info.elf}")
    return 0


def _cmd_profile(a) -> int:
    import json

    from .target.emulator import MAX_INSNS, profile

    images = expected = None
    if a.test_images:
        from .deploy.export import export_test_images

        export = a.export or Path(a.elf).resolve().parent.parent  # EXPORT/firmware-MCU/
        images, expected = export_test_images(export, a.test_images, "--test-images")
    prof = profile(a.elf, a.mcu, a.max_instructions or MAX_INSNS, progress=True, images=images,
                   expected=expected)
    print(prof.text())
    if a.json:
        a.json.write_text(json.dumps(prof.to_dict(), indent=2) + "\n")
    if prof.mismatches:
        what = "generated images" if prof.generative else "predictions"
        raise BitmcuError(f"{prof.mismatches} {what} of the firmware differ from the "
                          "numpy reference")
    return 0


def _cmd_run(a) -> int:
    from .apps.pipeline import run_all

    print(run_all(a.config, a.set, a.out, a.mcu, a.quiet))
    return 0


def _cmd_search(a) -> int:
    from .apps.search import study as st
    from .apps.search.space import check_data, load_space
    from .apps.search.trial import Budget
    from .train.config import parse_override

    if a.report and a.best:
        raise BitmcuError("give --report STUDY or --best STUDY, not both")
    if a.set and not a.best:
        raise BitmcuError(f"--set {a.set[0]}: --set changes the trial --best retrains; to set "
                          "a key for every trial of a search, put it under set: in the space "
                          "file")
    name = a.report or a.best or a.study
    if name is None and a.space is None:
        raise BitmcuError("give a search space file (bitmcu search SPACE.yaml), or --report "
                          "STUDY / --best STUDY")
    name = name or Path(a.space).stem
    url = a.storage or st.default_storage(a.root, name)
    if a.report:
        study = st.open_study(name, url, heartbeat=a.heartbeat)
        st.measure_front(study)
        print(st.write_report(study, a.out or a.root / name / "report"))
        return 0
    if a.best:
        try:
            seeds = [int(v) for v in a.seeds.split(",") if v.strip()]
        except ValueError:
            seeds = []
        if not seeds:
            raise BitmcuError(f"--seeds {a.seeds!r}: give seeds as 0,1,2")
        study = st.open_study(name, url, heartbeat=a.heartbeat)
        overrides = dict(parse_override(t) for t in a.set)
        summary = st.best(study, a.out or a.root / name / "best", seeds, overrides,
                          a.max_cycles, a.workers)
        print(st.best_text(summary))
        return 0
    space = load_space(a.space)
    check_data(space)
    n_trials = a.trials or (len(space.trials) if not space.params and space.trials else 20)
    budget = Budget(a.mcu, a.max_flash, a.max_ram, a.max_cycles)
    st.open_study(name, url, space, budget, a.heartbeat, create=True)
    if not a.quiet:
        print(space.text())
        print(f"study {name} in {url}: {budget.mcu}, up to {n_trials} trials, {a.workers} "
              f"worker(s)")
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
    st.run_workers(a.space, name, url, n_trials, a.timeout, str(a.root), a.workers, threads,
                   a.heartbeat, a.quiet)
    study = st.open_study(name, url, heartbeat=a.heartbeat)
    st.measure_front(study)
    print(st.write_report(study, a.root / name / "report"))
    return 0


def _cmd_export(a) -> int:
    from .apps.pipeline import export

    cmd = " ".join(["bitmcu", "export", str(a.run), "--out", str(a.out), "--target", a.target])
    if a.project:
        cmd += f" --project {a.project}"
    rep = export(a.run, a.out, a.target, a.data_dir, a.images, command=cmd,
                 allow_mismatch=a.allow_mismatch, project=a.project)
    print(rep.text())
    written = sorted(p.name for p in Path(a.out).iterdir() if p.is_file())
    print(f"wrote {a.out}/: {', '.join(written)}")
    if a.project:
        print(f"wrote {a.out}/{a.project}/: a {a.project} project; build and flash it with "
              f"`make -C {a.out}/{a.project} flash CH32FUN=path/to/ch32fun/ch32fun`")
    return 0


def _cmd_sample(a) -> int:
    from .apps.generate import sample_grid, sample_text
    from .train.checkpoint import load_checkpoint

    if load_checkpoint(a.run)["cfg"].model.family == "charrnn":
        lines = sample_text(a.run, a.lines, a.engine, a.seed, a.temperature, a.prefix, a.out)
        print("\n".join(lines))
        if a.out:
            print(f"wrote {a.out}: {len(lines)} lines (seeds {a.seed}..{a.seed + len(lines) - 1}, "
                  f"engine {a.engine})")
        return 0
    if a.out is None:
        raise BitmcuError("--out FILE.png or FILE.npz: where the decoder's samples go")

    images = sample_grid(a.run, a.out, a.per_class, a.engine, a.seed, a.temperature)
    print(f"wrote {a.out}: {len(images)} samples ({a.per_class} per class, seeds {a.seed}.."
          f"{a.seed + len(images) - 1}, engine {a.engine})")
    return 0


def _cmd_judge(a) -> int:
    from .apps.judge import judge, write_json
    from .train.checkpoint import load_checkpoint

    if load_checkpoint(a.run)["cfg"].model.family == "charrnn":
        from .apps.judge_text import judge_text
        from .apps.judge_text import write_json as write_text_json

        if a.oracle and len(a.oracle) > 1:
            raise BitmcuError("--oracle: a text model has one judge model")
        res = judge_text(a.run, a.lines, a.seed, a.temperature, a.data_dir,
                         a.oracle[0] if a.oracle else None)
        print(res.text())
        if a.json:
            write_text_json(res, a.json)
            print(f"wrote {a.json}")
        return 0

    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    res = judge(a.run, a.oracle, a.per_class, engines, a.seed, a.data_dir, quiet=False,
                temperature=a.temperature)
    print(res.text())
    if a.json:
        write_json(res, a.json)
        print(f"wrote {a.json}")
    return 0


def _cmd_verify(a) -> int:
    from .apps.pipeline import verify

    print(verify(a.run, a.data_dir, a.limit, a.sanitize).text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except BitmcuError as e:  # a value refused by its argument's type (see count)
        print(f"bitmcu: error: {e}", file=sys.stderr)
        return 2
    try:
        return a.func(a)
    except BitmcuError as e:
        print(f"bitmcu: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a path the user named: a real failure
            raise
        # a file or folder the user can fix: read-only, missing, full disk, a folder for a file
        print(f"bitmcu: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if a.command == "search":
            print("bitmcu: interrupted; the study keeps its finished trials (the interrupted "
                  "one is recorded as failed): the same command goes on with it, --report "
                  "shows it", file=sys.stderr)
            return 130
        run = getattr(a, "resume", None) or getattr(a, "out", None)
        hint = f" with `bitmcu train --resume {run}`" if run else ""
        print(f"bitmcu: interrupted; a training run resumes from its last completed epoch{hint}",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
