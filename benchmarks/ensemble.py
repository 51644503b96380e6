"""Test accuracy of trained runs alone and as a growing ensemble (mean of their softmax outputs).

    python benchmarks/ensemble.py RUN [RUN ...]

Float models as trained (the exported integer models agree with them to a few test images).
Shows how much the runs' errors overlap: if an ensemble barely beats its best member, the
members fail on the same images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from bitmcu.train import evaluate, load_checkpoint, load_data, model_from_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories or checkpoints")
    args = ap.parse_args()
    total, data, framing, wrong = None, None, None, 0
    for k, run in enumerate(args.runs, 1):
        blob = load_checkpoint(run)
        if data is None:
            data, framing = load_data(blob["cfg"]), blob["cfg"].data.input_description()
        elif blob["cfg"].data.input_description() != framing:
            raise SystemExit(f"{run}: its input is {blob['cfg'].data.input_description()}, the "
                             f"first run's {framing}; an ensemble needs the same input")
        ev = evaluate(model_from_checkpoint(blob), data.test_x, data.test_y)
        wrong = wrong + (ev.pred != ev.labels)
        p = ev.logits.softmax(1)
        total = p if total is None else total + p
        ens = float((total.argmax(1).numpy() == ev.labels).mean())
        print(f"{run}: {100 * ev.acc:.2f}%   ensemble of the first {k}: "
              f"{100 * ens:.2f}%", flush=True)
    n = len(args.runs)
    print(f"test images misclassified by every run: {int((wrong == n).sum())}, by at least half "
          f"of them: {int((2 * wrong >= n).sum())}, by any: {int((wrong > 0).sum())}")


if __name__ == "__main__":
    main()
