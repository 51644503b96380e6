"""Judging a character model: how well it predicts held-out lines, and what its samples are.

- bits per character (bpc) on the test lines, teacher-forced, for the trained (QAT) model, the
  numpy integer reference and the host-compiled C engine (the logits of the last two are the
  accumulators times the trained scale, through an exact log-softmax: the model's own
  distribution, temperature 1), next to a count-based bigram model of the training lines;
- its samples (N lines, seeds seed.., the C engine, at the run's or the given temperature):
  the share of novel lines (not among the training lines), duplicates among them, and their
  length distribution next to the real test lines' (mean, standard deviation, total variation
  distance between the two length histograms);
- an independent judge: a larger float character model trained by bitmcu on the same training
  lines (``--oracle``; by default the shipped models/judge-<data set>) gives the samples' bpc
  next to that of the real test lines: samples far less likely than real lines are not like
  them.

A line's characters and its end all count as predicted tokens (see train/text.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError
from ..deploy import reference
from ..deploy.codegen import model_header
from ..deploy.hostc import HostModel
from ..train import load_checkpoint, model_from_checkpoint
from ..train.text import bigram_bpc, evaluate_text, load_text_data
from .generate import check_seeds, load_text_model, sample_lines

MAX_LINES = 100_000
MODELS = Path(__file__).resolve().parents[3] / "models"


@dataclass
class TextJudgement:
    run: str
    split: str
    n_test: int
    temperature: float
    bpc: dict[str, float]  # path (float, int, c, bigram) -> bpc on the held-out lines
    n_samples: int
    novel: float  # share of samples not among the training lines
    duplicates: int  # samples that repeat an earlier sample
    length_mean: tuple[float, float]  # (samples, real test lines)
    length_std: tuple[float, float]
    length_tv: float  # total variation distance between the length histograms
    judge: str | None = None
    judge_bpc: tuple[float, float] | None = None  # (samples, real test lines) under the judge
    examples: list[str] | None = None

    def text(self) -> str:
        split = "validation" if self.split == "val" else "test"
        b = self.bpc
        lines = [f"character model {self.run}: {self.n_test} {split} lines, {self.n_samples} "
                 f"samples at temperature {self.temperature:g}"]
        lines.append(f"bits per character ({split}): float QAT {b['float']:.4f}, integer "
                     f"{b['int']:.4f}, C {b['c']:.4f}; bigram baseline {b['bigram']:.4f} "
                     f"({100 * (1 - b['int'] / b['bigram']):.1f}% below it)")
        lines.append(f"samples: {100 * self.novel:.1f}% novel (not training lines), "
                     f"{self.duplicates} duplicates")
        lines.append(f"length: mean {self.length_mean[0]:.2f} vs real {self.length_mean[1]:.2f}, "
                     f"std {self.length_std[0]:.2f} vs {self.length_std[1]:.2f}; total "
                     f"variation distance of the histograms {self.length_tv:.3f}")
        if self.judge_bpc is not None:
            lines.append(f"judge {self.judge}: samples {self.judge_bpc[0]:.4f} bpc, real "
                         f"{split} lines {self.judge_bpc[1]:.4f} bpc")
        if self.examples:
            lines.append("examples: " + ", ".join(self.examples))
        return "\n".join(lines)


def int_bpc(model, lines: list[str], data, engine: str = "int", batch: int = 2000) -> float:
    """bpc of ``lines`` by the integer model's logits (reference or C), teacher-forced."""
    x, lengths = data.encode(lines)
    x, lengths = x.numpy(), lengths.numpy()
    nats = model.ops[-1].nats
    host = HostModel(model_header(model, "bitmcu judge")) if engine == "c" else None
    total, count = 0.0, 0
    try:
        for i in range(0, len(x), batch):
            xb, nb = x[i : i + batch], lengths[i : i + batch]
            t = int(nb.max())
            acc = (host.text_logits(xb[:, :t], model.n_classes) if host is not None
                   else reference.text_logits(model, xb[:, :t])).astype(np.float64) * nats
            logp = acc - acc.max(axis=2, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=2, keepdims=True))
            target = xb[:, 1 : t + 1]
            lp = np.take_along_axis(logp, target[..., None], axis=2)[..., 0]
            mask = np.arange(t)[None, :] < nb[:, None]
            total -= float((lp * mask).sum())
            count += int(mask.sum())
    finally:
        if host is not None:
            host.close()
    return total / count / math.log(2)


def length_figures(samples: list[str], real: list[str]) -> tuple[tuple, tuple, float]:
    a = np.array([len(s) for s in samples])
    b = np.array([len(s) for s in real])
    top = int(max(a.max(initial=0), b.max(initial=0))) + 1
    ha = np.bincount(a, minlength=top) / max(1, len(a))
    hb = np.bincount(b, minlength=top) / max(1, len(b))
    return ((float(a.mean()), float(b.mean())), (float(a.std()), float(b.std())),
            float(0.5 * np.abs(ha - hb).sum()))


def default_judge(cfg) -> Path | None:
    p = MODELS / f"judge-{Path(cfg.data.dataset).stem}"
    return p if (p / "checkpoint.pt").is_file() else None


def judge_text(run: str | Path, n: int = 1000, seed: int = 1, temperature: float | None = None,
               data_dir: str | None = None, judge: str | Path | None = None) -> TextJudgement:
    if not 1 <= n <= MAX_LINES:
        raise BitmcuError(f"--lines {n}: must be 1..{MAX_LINES}")
    check_seeds(seed, n)
    blob, model = load_text_model(run, temperature)
    cfg = blob["cfg"]
    if data_dir:
        cfg.data.data_dir = data_dir
    data = load_text_data(cfg)
    bpc = {"float": evaluate_text(model_from_checkpoint(blob), data.test, data)["bpc"],
           "int": int_bpc(model, data.test, data, "int"),
           "c": int_bpc(model, data.test, data, "c"),
           "bigram": bigram_bpc(data, data.test)}
    samples = sample_lines(model, seed + np.arange(n), "c")
    train = set(data.train)
    novel = sum(s not in train for s in samples) / n
    duplicates = n - len(set(samples))
    mean, std, tv = length_figures(samples, data.test)
    res = TextJudgement(str(run), data.split, len(data.test), model.ops[-1].temperature, bpc, n,
                        novel, duplicates, mean, std, tv, examples=samples[:12])
    judge = judge if judge is not None else default_judge(cfg)
    if judge is not None:
        jblob = load_checkpoint(judge)
        jnet = model_from_checkpoint(jblob)
        if jblob["cfg"].model.family != "charrnn" or jnet.vocab_text() != data.vocab:
            raise BitmcuError(f"--oracle {judge}: not a character model of the same vocabulary "
                              f"({data.vocab[1:]!r})")
        usable = [s for s in samples if len(s) + 1 <= data.context]
        res.judge = str(judge)
        res.judge_bpc = (evaluate_text(jnet, usable, data)["bpc"],
                         evaluate_text(jnet, data.test, data)["bpc"])
    return res


def write_json(res: TextJudgement, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(res), indent=2) + "\n")
