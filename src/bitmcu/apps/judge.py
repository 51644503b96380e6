"""Judging a decoder: an independent float classifier (the oracle) trained on the real images of
the same data set looks at K generated images per class, from each engine.

Figures per engine (float QAT decoder, numpy integer reference, host-compiled C engine):

- oracle accuracy per class: the share of a class's samples that the oracle calls that class;
- diversity: the share of distinct images among the K of a class, and their mean pairwise
  distance next to that of the same number of real test images of the class;
- memorization: each sample's distance to its nearest training image (any class), next to the
  real test images' distances to theirs; a sample closer to the training set than every real
  test image is counted as a possible copy;
- a Frechet distance between generated and real test images in the oracle's feature space (the
  input of its last layer), next to the distance between two halves of the real test set.

Several judges, and the strict figure: every oracle given (``--oracle``, repeatable; by
default the two shipped ones, models/oracle-<data set> and -b, which differ in architecture,
seed and augmentation) and, for dice, the classical pip counter (:mod:`bitmcu.apps.pips`) each read
every sample; a sample counts for the strict figure only where every judge reads the class asked
for. Each judge's own accuracy on the real test images is reported beside. Dice are also read as
the die's OLED shows them by default (2x scaling, the contrast curve and ordered dithering,
averaged back: die/display.py), and their ghost share
(lit pixels in no part of a die) is set beside the real test images'.

Distances are Euclidean between images with pixels scaled to 0..1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError, choices
from ..core.rng import describe_scale
from ..train import load_checkpoint, load_data, model_from_checkpoint
from .die.display import display_image
from .generate import ENGINES, MAX_PER_CLASS_NPZ, check_seeds, load_decoder, sample_images
from .pips import read_dice

MAX_PER_CLASS = MAX_PER_CLASS_NPZ  # samples per class and engine that `judge` draws: as many
#                                    as `sample` writes to an .npz for an outside judge
REAL_MIN = 2000  # real test images the judges read at least (more: as many as the samples)
PAIRS_MAX = 500  # images per class in the pairwise-distance figure (cost grows with the square)


@dataclass
class EngineFigures:
    engine: str
    accuracy: list[float]  # per class
    distinct: list[float]  # per class: distinct images / K
    pairwise: list[float]  # per class: mean pairwise distance
    nearest_train_median: float  # median distance of a sample to its nearest training image
    nearest_train_min: float
    copies: int  # samples closer to the training set than every real test image
    exact_copies: int  # samples equal to a training image
    frechet: float
    judges: dict[str, list[float]] = field(default_factory=dict)  # per judge, per class
    strict: list[float] = field(default_factory=list)  # per class: every judge reads the class
    display_judges: dict[str, list[float]] = field(default_factory=dict)  # the OLED's pictures
    display_strict: list[float] = field(default_factory=list)
    ghost: float | None = None  # dice: mean share of lit pixels in no part of a die
    ghost_images: int | None = None  # dice: samples with any such pixel

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(self.accuracy))


@dataclass
class Judgement:
    run: str
    oracle: str
    oracle_test_accuracy: float
    per_class: int
    seed: int
    classes: list[str]
    real_pairwise: list[float]  # per class, real test images
    real_nearest_train_median: float
    real_nearest_train_min: float
    real_frechet: float  # two halves of the real test set
    feature_layer: str
    latent_scale: int  # the sampler's word (rng.latent_scale of the temperature and prior)
    temperature: float  # the sampling temperature (the run's model.temperature, or --temperature)
    engines: list[EngineFigures] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)  # the oracles' runs, and "pips" for dice
    judge_test_accuracy: dict[str, float] = field(default_factory=dict)  # on real test images
    judge_display_accuracy: dict[str, float] = field(default_factory=dict)  # the same, shown
    real_ghost: float | None = None  # dice: the real test images' ghost share
    real_ghost_images: int | None = None  # dice: real test images with a ghost pixel
    judge_test_images: int = 0  # real test images the judges read (their accuracy, ghost share)

    def to_dict(self) -> dict:
        d = asdict(self)
        for e, fig in zip(d["engines"], self.engines, strict=True):
            e["mean_accuracy"] = fig.mean_accuracy
        return d

    def text(self) -> str:
        k = self.per_class
        out = [f"judge {self.run}: {k} samples per class (seeds {self.seed}.."
               f"{self.seed + k * len(self.classes) - 1}, temperature {self.temperature:g}: latent "
               f"{describe_scale(self.latent_scale)}), oracle {self.oracle} "
               f"(test accuracy {100 * self.oracle_test_accuracy:.2f}%)"]
        names = [e.engine for e in self.engines]
        head = f"{'class':>6}" + "".join(f"{'acc ' + n:>11}{'distinct':>10}{'spread':>8}"
                                         for n in names) + f"{'real spread':>13}"
        out += ["", "oracle accuracy, distinct share and mean pairwise distance per class:", head]
        for c, name in enumerate(self.classes):
            row = f"{name:>6}"
            for e in self.engines:
                row += f"{100 * e.accuracy[c]:>10.2f}%{100 * e.distinct[c]:>9.1f}%" \
                       f"{e.pairwise[c]:>8.2f}"
            out.append(row + f"{self.real_pairwise[c]:>13.2f}")
        out.append(f"{'all':>6}" + "".join(f"{100 * e.mean_accuracy:>10.2f}%{'':>18}"
                                           for e in self.engines))
        out += ["", f"memorization: distance to the nearest training image (median, min); "
                f"real test images: {self.real_nearest_train_median:.2f}, "
                f"{self.real_nearest_train_min:.2f}"]
        for e in self.engines:
            out.append(f"  {e.engine:<6} {e.nearest_train_median:.2f}, {e.nearest_train_min:.2f}"
                       f"; {e.copies} closer than every real test image, {e.exact_copies} "
                       "equal to a training image")
        out += ["", f"Frechet distance to the real test images in the oracle's features "
                f"({self.feature_layer}); two halves of the real test set: "
                f"{self.real_frechet:.3f}"]
        out += [f"  {e.engine:<6} {e.frechet:.3f}" for e in self.engines]
        out += self._judges_text()
        by = {e.engine: e for e in self.engines}
        if "float" in by and "int" in by:
            gap = 100 * (by["float"].mean_accuracy - by["int"].mean_accuracy)
            out.append(f"\ninteger reference vs float decoder: {gap:+.2f} points of oracle "
                       "accuracy (float minus integer)")
        return "\n".join(out)


    def _judges_text(self) -> list[str]:
        if not self.judges:
            return []
        names = {j: f"J{i + 1}" for i, j in enumerate(self.judges)}
        out = ["", f"judges (each on {self.judge_test_images:,} real test images, plain"
               + (" and as the display shows them):" if self.judge_display_accuracy else "):")]
        for j in self.judges:
            shown = self.judge_display_accuracy.get(j)
            out.append(f"  {names[j]} {j}: {100 * self.judge_test_accuracy[j]:.2f}%"
                       + ("" if shown is None else f", on the display {100 * shown:.2f}%"))
        for e in self.engines:
            out += ["", f"{e.engine}: the share of each class's samples that each judge reads as "
                    "that class; strict: every judge does" + (
                        "; display: the same of the pictures the OLED shows"
                        if e.display_strict else "")]
            head = f"{'class':>6}" + "".join(f"{names[j]:>8}" for j in self.judges) + \
                f"{'strict':>9}" + (f"{'display':>9}" if e.display_strict else "")
            out.append(head)
            for c, name in enumerate(self.classes):
                row = f"{name:>6}" + "".join(f"{100 * e.judges[j][c]:>7.1f}%" for j in self.judges)
                row += f"{100 * e.strict[c]:>8.2f}%"
                if e.display_strict:
                    row += f"{100 * e.display_strict[c]:>8.2f}%"
                out.append(row)
            row = f"{'all':>6}" + "".join(f"{100 * np.mean(e.judges[j]):>7.1f}%"
                                          for j in self.judges)
            row += f"{100 * np.mean(e.strict):>8.2f}%"
            if e.display_strict:
                row += f"{100 * np.mean(e.display_strict):>8.2f}%"
            out.append(row)
            if e.ghost is not None:
                out.append(f"  ghost share (lit pixels in no part of a die): {100 * e.ghost:.4f}%, "
                           f"in {e.ghost_images:,} of {len(self.classes) * self.per_class:,} samples (real "
                           f"test images: {100 * self.real_ghost:.4f}%, in "
                           f"{self.real_ghost_images:,} of {self.judge_test_images:,})")
        return out


# ------------------------------------------------------------------------------- the oracle


SHIPPED = Path(__file__).resolve().parents[3] / "models"  # in a checkout: the shipped models


def default_oracle(cfg) -> Path:
    """runs/oracle-<data set>: where `bitmcu train oracle-<data set>` puts the oracle."""
    name = Path(cfg.data.dataset).stem
    return Path("runs") / f"oracle-{name}"


def default_oracles(cfg) -> list[Path]:
    """The shipped oracles of the decoder's data set (models/oracle-<data set> and
    models/oracle-<data set>-b, two networks that differ in architecture, seed and
    augmentation), where this checkout has them; else runs/oracle-<data set>."""
    name = Path(cfg.data.dataset).stem
    shipped = [SHIPPED / f"oracle-{name}{tag}" for tag in ("", "-b")]
    shipped = [p for p in shipped if (p / "checkpoint.pt").is_file()]
    return shipped or [default_oracle(cfg)]


def load_oracle(path: str | Path, cfg):
    """(model, blob) of a trained classifier that judges images of the decoder's data set;
    errors say how to train one or why it does not fit."""

    path = Path(path)
    name = Path(cfg.data.dataset).stem
    if not path.exists():
        raise BitmcuError(f"oracle {path} does not exist; train it first: bitmcu train "
                          f"oracle-{name} --out {path} (or pass --oracle RUN)")
    blob = load_checkpoint(path)
    ocfg = blob["cfg"]
    if ocfg.model.family == "decoder":
        raise BitmcuError(f"oracle {path}: a decoder; the oracle is a classifier, e.g. "
                          f"`bitmcu train oracle-{name}`")
    has = (ocfg.data.dataset, ocfg.data.input_description(), blob["n_classes"])
    needs = (cfg.data.dataset, cfg.data.input_description())
    if has[:2] != needs:
        raise BitmcuError(f"oracle {path} was trained on {has[0]} ({has[1]}); the decoder "
                          f"makes {needs[0]} ({needs[1]}): train an oracle on the same data")
    model = model_from_checkpoint(blob)
    model.eval()
    return model, blob


def oracle_outputs(model, images: np.ndarray, batch: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, features) of uint8 images: features are the input of the last layer."""
    import torch

    last = model.layers[-1]
    seen: list[torch.Tensor] = []
    hook = last.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    preds, feats = [], []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                seen.clear()
                out = model(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])))
                preds.append(out.argmax(1).numpy())
                feats.append(seen[-1].double().numpy())
    finally:
        hook.remove()
    if not preds:
        return np.zeros(0, np.int64), np.zeros((0, last.in_features))
    return np.concatenate(preds), np.concatenate(feats)


# ------------------------------------------------------------------------------- the figures


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a and b (rows are samples):
    |mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), by symmetric eigendecompositions."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cb @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb)
                 - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def mean_pairwise(images: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct positions (0 for fewer than 2)."""
    x = _flat(images[:PAIRS_MAX]).astype(np.float64)
    n = len(x)
    if n < 2:
        return 0.0
    sq = (x * x).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean())


def nearest_distances(queries: np.ndarray, train: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Per query image, the Euclidean distance to its nearest training image."""
    q, t = _flat(queries), _flat(train)
    tsq = (t * t).sum(1)
    out = np.empty(len(q))
    for i in range(0, len(q), chunk):
        qc = q[i : i + chunk]
        d2 = (qc * qc).sum(1)[:, None] + tsq[None, :] - 2 * qc @ t.T
        out[i : i + chunk] = np.sqrt(np.clip(d2.min(1), 0, None))
    return out


def judge(run: str | Path, oracle: str | Path | list | None = None, per_class: int = 1000,
          engines: list[str] | tuple[str, ...] = ENGINES, seed: int = 1,
          data_dir: str | None = None, quiet: bool = True,
          temperature: float | None = None) -> Judgement:
    """Generate `per_class` samples per class with each engine and judge them (see module).
    ``oracle``: one classifier run or a list of them (default :func:`default_oracles`); the
    first also gives the features of the Frechet distance. Dice are read by the pip counter
    too, and as the display shows them."""

    if not 2 <= per_class <= MAX_PER_CLASS:
        raise BitmcuError(f"--per-class {per_class}: must be 2..{MAX_PER_CLASS:,} (diversity "
                          "needs pairs)")
    for e in engines:
        if e not in ENGINES:
            raise BitmcuError(f"--engines: {e!r} is not allowed; use {choices(ENGINES)}")
    blob, model = load_decoder(run, temperature)
    cfg = blob["cfg"]
    if data_dir:
        cfg.data.data_dir = data_dir
    if isinstance(oracle, str | Path):
        oracle = [oracle]
    oracles = [Path(o) for o in oracle] if oracle else default_oracles(cfg)
    models = {}
    for o in oracles:
        omodel, oblob = load_oracle(o, cfg)
        if oblob["n_classes"] != model.n_classes:
            raise BitmcuError(f"oracle {o} tells {oblob['n_classes']} classes apart; the "
                              f"decoder makes {model.n_classes}")
        models[str(o)] = omodel
    oracle = oracles[0]
    omodel = models[str(oracle)]
    data = load_data(cfg)
    test_x, test_y = data.test_x.numpy(), data.test_y.numpy()
    train_x = data.train_x.numpy()
    real_pred, real_feats = oracle_outputs(omodel, test_x)
    dice = cfg.data.dataset == "dice"


    def read(images, first=None):  # first: the first oracle's predictions, where known
        return read_all(models, images, dice, {str(oracle): first} if first is not None else {})

    n = model.n_classes
    classes = np.repeat(np.arange(n), per_class)
    check_seeds(seed, len(classes))
    seeds = seed + np.arange(len(classes))
    real = [test_x[test_y == c][:per_class] for c in range(n)]
    real_near = nearest_distances(np.concatenate(real), train_x)
    half = len(real_feats) // 2
    names = getattr(data, "class_names", None) or [str(c) for c in range(n)]
    if cfg.data.dataset == "dice":
        names = [f"face {c + 1}" for c in range(n)]
    out = Judgement(
        run=str(run), oracle=str(oracle), oracle_test_accuracy=float((real_pred == test_y).mean()),
        per_class=per_class, seed=seed, classes=list(names),
        real_pairwise=[mean_pairwise(r) for r in real],
        real_nearest_train_median=float(np.median(real_near)),
        real_nearest_train_min=float(real_near.min()),
        real_frechet=frechet(real_feats[:half], real_feats[half:]),
        feature_layer=f"input of its last layer, {real_feats.shape[1]} values",
        latent_scale=model.latent_scale,
        temperature=cfg.model.temperature if temperature is None else temperature,
        judges=[*models, *(["pips"] if dice else [])])
    # the judges on real test images: as many as the samples judged, at least 2,000
    k = out.judge_test_images = min(len(test_x), max(REAL_MIN, len(classes)))
    reads, ghost = read(test_x[:k], real_pred[:k])
    if ghost is not None:
        out.real_ghost, out.real_ghost_images = ghost_figures(ghost)
    out.judge_test_accuracy = {name: float((r == test_y[:k]).mean()) for name, r in reads.items()}
    if dice:
        reads, _ = read(display_images(test_x[:k]))
        out.judge_display_accuracy = {name: float((r == test_y[:k]).mean())
                                      for name, r in reads.items()}
    train_keys = {im.tobytes() for im in train_x}
    for engine in engines:
        if not quiet:
            print(f"  {engine}: generating {len(classes)} images", flush=True)
        images = sample_images(blob, model, seeds, classes, engine)
        pred, feats = oracle_outputs(omodel, images)
        fig = engine_figures(engine, images, classes, n, pred, feats, train_x, train_keys,
                             real_near, real_feats)
        reads, ghost = read(images, pred)
        if ghost is not None:
            fig.ghost, fig.ghost_images = ghost_figures(ghost)
        fig.judges, fig.strict = agreement(reads, classes, n)
        if dice:
            fig.display_judges, fig.display_strict = agreement(
                read(display_images(images))[0], classes, n)
        out.engines.append(fig)
    return out


def read_all(oracles: dict, images: np.ndarray, dice: bool, known: dict | None = None):
    """(name -> the class each judge reads of each image, each image's ghost share or None): every
    oracle of ``oracles`` (name -> model; ``known``: name -> predictions already made) and, for
    dice, the pip counter (a count of 1..6 is face class 0..5; unreadable is -1), each in one
    pass over the images."""
    known = known or {}
    reads = {name: known[name] if name in known else _oracle_reads(m, images)
             for name, m in oracles.items()}
    if not dice:
        return reads, None

    counts, ghost = read_dice(images)
    reads["pips"] = counts - 1
    return reads, ghost


def ghost_figures(ghost: np.ndarray) -> tuple[float, int]:
    """(the mean ghost share, how many images have any ghost pixel) of each image's share."""
    return float(ghost.mean()), int((ghost > 0).sum())


def _oracle_reads(model, images: np.ndarray) -> np.ndarray:
    return oracle_outputs(model, images)[0]


def agreement(reads: dict[str, np.ndarray], classes: np.ndarray, n: int):
    """(per judge, per class: the share read as the class asked for; per class: the share
    that every judge reads as the class asked for)."""
    right = {name: r == classes for name, r in reads.items()}
    every = np.logical_and.reduce(list(right.values()))
    per = {name: [float(ok[classes == c].mean()) for c in range(n)] for name, ok in right.items()}
    return per, [float(every[classes == c].mean()) for c in range(n)]


def display_images(images: np.ndarray) -> np.ndarray:
    """Dice pictures as the die's OLED shows them by default (2x, the contrast curve and ordered
    dithering: die/display.py), averaged back."""
    if 64 % images.shape[-1]:
        raise BitmcuError(f"the display path needs images whose side divides 64, not "
                          f"{images.shape[-1]}")
    return np.concatenate([display_image(images[i : i + 1000])
                           for i in range(0, len(images), 1000)]) if len(images) else images


def engine_figures(engine: str, images: np.ndarray, classes: np.ndarray, n: int,
                   pred: np.ndarray, feats: np.ndarray, train_x: np.ndarray, train_keys: set,
                   real_near: np.ndarray, real_feats: np.ndarray) -> EngineFigures:
    """One engine's figures from its images, their classes, the oracle's predictions and
    features of them; ``train_keys``: the training images' bytes; ``real_near``: the real
    test images' distances to their nearest training image."""
    near = nearest_distances(images, train_x)
    per = [images[classes == c] for c in range(n)]
    return EngineFigures(
        engine=engine,
        accuracy=[float((pred[classes == c] == c).mean()) for c in range(n)],
        distinct=[len({im.tobytes() for im in p}) / len(p) for p in per],
        pairwise=[mean_pairwise(p) for p in per],
        nearest_train_median=float(np.median(near)),
        nearest_train_min=float(near.min()),
        copies=int((near < real_near.min()).sum()),
        exact_copies=sum(im.tobytes() in train_keys for im in images),
        frechet=frechet(feats, real_feats))


def write_json(j: Judgement, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(j.to_dict(), indent=2) + "\n")
    tmp.replace(path)
