"""Today's figures, generated: the tables that open benchmarks/RESULTS.md (every shipped model,
every named config) and the short one in README.md, each between ``<!-- current: NAME -->``
markers. Shipped models give their recorded figures (models/*/figures.json, which
tests/test_shipped.py re-measures exactly); named configs give their weight bytes and each
chip's flash and RAM, computed here at HEAD from an untrained model of the config (sizes do not
depend on the weight values), and their recorded accuracy and cycles (benchmarks/figures.yaml,
with the date and the section of RESULTS.md that holds the runs).

    python benchmarks/current.py          # rewrite the tables
    python benchmarks/current.py --check  # exit 1 if a file's table is not what HEAD generates
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from elftools.elf.elffile import ELFFile

from bitmcu.deploy.export import model_report, write_export
from bitmcu.target.firmware import build_firmware
from bitmcu.train.config import config_dir, load_config
from bitmcu.train.lower import lower
from bitmcu.train.models import build_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
CLASSES = {"mnist": 10, "fashion-mnist": 10, "dice": 6}  # the named configs' data sets
VOCAB = {"surnames": "\n" + "abcdefghijklmnopqrstuvwxyz"}  # the text ones' tokens
CHIP_NAMES = {"ch32v003": "CH32V003", "ch32v002": "CH32V002"}


def shipped() -> list[dict]:
    """Each shipped model's figures.json with its name and config."""
    out = []
    for fig in sorted(MODELS.glob("*/figures.json")):
        cfg = yaml.safe_load((fig.parent / "config.yaml").read_text())
        out.append({"name": fig.parent.name, "config": cfg.get("name", fig.parent.name),
                    "seed": cfg.get("seed", 0), **json.loads(fig.read_text())})
    return out


def firmware_sizes(cfg, chip: str, work: Path, n_images: int) -> tuple[int, int, int]:
    """(flash, RAM, weight bytes) of the config's firmware for ``chip``, built from untrained weights: flash =
    text + rodata + data, RAM = data + bss + the static stack bound."""
    text = cfg.model.family == "charrnn"
    n_classes = len(VOCAB[cfg.data.dataset]) if text else CLASSES[cfg.data.dataset]
    torch.manual_seed(cfg.seed)
    net = build_model(cfg, n_classes)
    net.update_clips()
    if text:
        net.set_vocab(VOCAB[cfg.data.dataset])
    blob = {"cfg": cfg, "model": net.state_dict(), "n_classes": n_classes,
            "path": f"config {cfg.name}"}
    if cfg.model.prior == "mixture":  # its tables' sizes, not their values, matter here
        k, shape = cfg.model.mixture, (n_classes, cfg.model.mixture, cfg.model.latent)
        blob["mixture"] = {"centre": torch.zeros(shape, dtype=torch.float64),
                           "sd": torch.ones(shape, dtype=torch.float64),
                           "weight": torch.full(shape[:2], 1 / k, dtype=torch.float64)}
    model = lower(blob)
    exp = work / f"{cfg.name}-{chip}"
    side = cfg.data.size
    images = None if text else np.zeros((4, side, side), dtype=np.uint8)
    labels = None if text else np.zeros(4, dtype=np.int64)
    write_export(model, exp, images, labels, model_report(model, chip), chip, 4,
                 "benchmarks/current.py")
    info = build_firmware(exp, chip, n_images=n_images)
    with open(info.elf, "rb") as f:
        secs = {s.name: s["sh_size"] for s in ELFFile(f).iter_sections()}
    data = secs.get(".data", 0)
    flash = secs.get(".text", 0) + secs.get(".rodata", 0) + data
    return flash, data + secs.get(".bss", 0) + info.stack_bound, model.weight_bytes


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def _pct(v: float) -> str:
    return f"{v:.2f}%" if round(v, 2) == v else f"{v:.3f}%"


def model_accuracy(m: dict, figures: dict) -> str:
    """A shipped model's integer test accuracy; a decoder's strict judges' figure (recorded)."""
    acc = m.get("accuracy", {}).get("integer")
    if acc is not None:
        return _pct(acc)
    if "bpc" in m:  # a character model: bits per character of the integer model
        return f"{m['bpc']['integer']:.3f} bits per character"
    return f"{_pct(figures[m['config']]['accuracy']['value'])} by strict judges"


def shipped_table(models: list[dict], figures: dict) -> str:
    lines = ["| model | test accuracy | weight bytes | chip | cycles | flash | RAM | trained by |",
             "|---|---:|---:|---|---:|---:|---:|---|"]
    for m in models:
        if m.get("kind") == "oracle":
            continue
        for i, fw in enumerate(m["firmware"]):
            head = (f"[{m['name']}](../models/{m['name']}) | {model_accuracy(m, figures)} | "
                    f"{m['weight_bytes']:,}") if i == 0 else " | |"
            cmd = f"`bitmcu train models/{m['name']}/config.yaml`" if i == 0 else ""
            lines.append(f"| {head} | {CHIP_NAMES[fw['mcu']]} | {fw['cycles']:,} | "
                         f"{fw['flash']:,} | {fw['ram']:,} | {cmd} |")
        if "die" in m:
            d = m["die"]
            what = "text die" if "lines" in d else "die"
            lines.append(f"| the {what} firmware (`bitmcu die {m['name']}`) | | | CH32V003 | "
                         f"{d['generation_cycles'][0]:,} per {'line' if 'lines' in d else 'roll'}"
                         f" | {d['flash']:,} | {d['ram']:,} | |")
    lines.append("")
    lines.append("| oracle (judges, host only) | test accuracy | on the OLED (dithered) |")
    lines.append("|---|---:|---:|")
    for m in models:
        if m.get("kind") == "oracle" and "test_bpc" in m:  # a judge of text
            lines.append(f"| [{m['name']}](../models/{m['name']}) | {m['test_bpc']:.4f} bits "
                         "per character | - |")
        elif m.get("kind") == "oracle":
            disp = m.get("display_accuracy")
            lines.append(f"| [{m['name']}](../models/{m['name']}) | {m['test_accuracy']:.2f}% | "
                         f"{'-' if disp is None else f'{disp:.2f}%'} |")
    return "\n".join(lines)


def config_rows(figures: dict, work: Path) -> list[dict]:
    rows = []
    for path in sorted(config_dir().glob("*.yaml")):
        name = path.stem
        if name not in figures:
            raise SystemExit(f"{path}: no entry in benchmarks/figures.yaml (add its figures or "
                             "its role)")
        rec = figures[name]
        row = {"name": name, **rec, "sizes": {}}
        if "chips" in rec:
            cfg = load_config(name)
            for chip in rec["chips"]:
                flash, ram, wb = firmware_sizes(cfg, chip, work, rec.get("images", 4))
                row["sizes"][chip] = (flash, ram)
                row["weight_bytes"] = wb
        rows.append(row)
    return rows


def config_table(rows: list[dict]) -> str:
    lines = ["| config (`bitmcu train NAME`) | accuracy (recorded) | weight bytes | chip | flash | RAM "
             "| cycles (recorded) | runs |",
             "|---|---|---:|---|---:|---:|---:|---|"]
    helpers = []
    for r in rows:
        if "chips" not in r:
            helpers.append(f"`{r['name']}` ({r['role']})")
            continue
        acc = r["accuracy"]
        acc_text = f"{_pct(acc['value'])}, {acc['what']}" if "value" in acc else acc["what"]
        for i, chip in enumerate(r["chips"]):
            flash, ram = r["sizes"][chip]
            cyc = r.get("cycles", {}).get(chip)
            head = (f"`{r['name']}` | {acc_text} | {r['weight_bytes']:,}" if i == 0 else " | |")
            where = f"{r['date']}, \"{r['section']}\"" if i == 0 else ""
            lines.append(f"| {head} | {CHIP_NAMES[chip]} | {flash:,} | {ram:,} | {_n(cyc)} | "
                         f"{where} |")
    lines.append("")
    lines.append("Not deployed (they train on the host): " + "; ".join(helpers) + ".")
    return "\n".join(lines)


def results_block(models, rows, figures: dict) -> str:
    return ("Shipped models (`models/`; tests/test_shipped.py rebuilds each firmware and requires "
            "these figures exactly; cycles are the emulator's cycle model, median over the "
            "embedded test images; RAM includes the stack):\n\n" + shipped_table(models, figures) +
            "\n\nNamed configs (`configs/`): weight bytes, flash and RAM of the firmware with 4 "
            "embedded test images (2 where 4 do not fit), built at HEAD from an untrained model of "
            "the config (sizes do not depend on the weight values; RAM: data + bss + the static "
            "stack bound); accuracy and cycles as recorded on the date given, in the section of "
            "this file named:\n\n" +
            config_table(rows))


def readme_block(models, figures: dict) -> str:
    lines = ["| shipped model | what | accuracy | weights | chip: cycles per inference, flash, RAM |",
             "|---|---|---:|---:|---|"]
    what = {"reference": "MNIST, 256-64-64-64-10, 4-bit",
            "cnn-ch32v002-ternary": "MNIST, depthwise CNN, 80 channels",
            "cnn-ch32v002-fast": "MNIST, depthwise CNN, 32 channels",
            "die-ch32v003": "dice 32x32 decoder (the electronic die)",
            "charrnn-surnames": "surnames, character model (cell 96, 4-bit): new names"}
    for m in models:
        if m.get("kind") == "oracle":
            continue
        acc = model_accuracy(m, figures)
        chips = "; ".join(f"{CHIP_NAMES[fw['mcu']]}: {fw['cycles']:,}, {fw['flash']:,} B, "
                          f"{fw['ram']:,} B" for fw in m["firmware"])
        lines.append(f"| [{m['name']}](models/{m['name']}) | {what.get(m['name'], m['config'])} | "
                     f"{acc} | {m['weight_bytes']:,} B | {chips} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- current: {name} -->\n).*?(<!-- current: end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"no '<!-- current: {name} -->' ... '<!-- current: end -->' block")
    return pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def generate(work: Path) -> dict[Path, str]:
    """The files' new texts."""
    models = shipped()
    figures = yaml.safe_load((ROOT / "benchmarks" / "figures.yaml").read_text())
    rows = config_rows(figures, work)
    results = ROOT / "benchmarks" / "RESULTS.md"
    readme = ROOT / "README.md"
    return {results: replace_block(results.read_text(), "results", results_block(models, rows, figures)),
            readme: replace_block(readme.read_text(), "readme", readme_block(models, figures))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        new = generate(Path(work))
    stale = [p for p, t in new.items() if p.read_text() != t]
    if a.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)}: its current table differs from what HEAD generates; "
                  "run python benchmarks/current.py")
        return 1 if stale else 0
    for p in stale:
        p.write_text(new[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
