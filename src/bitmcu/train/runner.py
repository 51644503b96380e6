"""Training runs: one directory per run with config, checkpoint, metrics and plots; resumable.

Every random draw of epoch ``e`` comes from a generator seeded with ``(seed, e)``, and the learning
rate is a pure function of the position in training, so a run resumed after its last completed
epoch ends exactly where an uninterrupted run with the same seed ends (on CPU).
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from ..core.errors import BitmcuError
from ..core.outdir import locked
from ..data import Augmenter, Dataset, downscale, load_dataset
from ..data.datasets import cache_dir
from ..data.dice import dice_factor_arrays
from .checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint, save_checkpoint
from .config import (
    Config,
    apply_overrides,
    config_from_dict,
    differences,
    drop_retired_keys,
    parse_override,
    read_yaml,
)
from .critic import Adversary
from .mixture import check_mixture_data, encoder_means, fit_mixture
from .models import build_model, quantize_latent
from .nn import QuantWeights
from .plots import plot_curves, plot_first_layer, plot_weights
from .text import (
    calibration_tokens,
    evaluate_text,
    load_text_data,
    load_text_teacher,
    train_text_epoch,
)


def lr_at(cfg: Config, t: float) -> float:
    """Learning rate at fractional epoch ``t`` (0 <= t <= epochs)."""
    tc = cfg.train
    if tc.schedule == "cosine":
        lr = tc.lr * 0.5 * (1 + math.cos(math.pi * min(t / tc.epochs, 1.0)))
    elif tc.schedule == "step":
        lr = tc.lr * tc.gamma ** math.floor(t / tc.step_size)
    elif tc.schedule == "cosine_restarts":
        lr = tc.lr * 0.5 * (1 + math.cos(math.pi * (t % tc.restart_period) / tc.restart_period))
    else:
        lr = tc.lr
    if tc.halve_lr_at is not None and t >= tc.halve_lr_at:
        lr *= 0.5
    return lr


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BitmcuError(f"train.device is {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def make_optimizer(cfg: Config, model) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@dataclass
class EvalResult:
    loss: float
    acc: float
    pred: np.ndarray
    labels: np.ndarray
    logits: torch.Tensor  # (n, classes), on the CPU

    def confusion(self, n_classes: int) -> np.ndarray:
        cm = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(cm, (self.labels, self.pred), 1)
        return cm


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, device=None, batch: int = 2000) -> EvalResult:
    device = device or torch.device("cpu")
    model.eval()
    outs, loss = [], 0.0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch].to(device))
        loss += F.cross_entropy(out, y[i : i + batch].to(device), reduction="sum").item()
        outs.append(out.cpu())
    logits = torch.cat(outs)
    pred = logits.argmax(1).numpy()
    labels = y.numpy()
    return EvalResult(loss / max(1, len(x)), float((pred == labels).mean()), pred, labels, logits)


def load_data(cfg: Config) -> Dataset:
    d = cfg.data
    return load_dataset(d.dataset, d.size, d.resize, d.data_dir, d.train_limit, crop=d.crop,
                        dice=d.dice, validation=d.validation)


def load_teacher(cfg: Config, data: Dataset, device):
    """The model or ensemble to distill from (``train.teacher``), checked against the data."""
    runs = cfg.train.teacher
    if not runs:
        return None
    needs = f"{data.n_classes} classes, {cfg.data.input_description()}"
    models = []
    for run in [runs] if isinstance(runs, str) else runs:
        try:
            blob = load_checkpoint(run)
        except BitmcuError as e:
            hint = ("" if Path(run).exists() else "; train the teacher first (a config that "
                    "names teachers says how in its comment)")
            raise BitmcuError(f"config key 'train.teacher': {e}{hint}") from None
        has = f'{blob["n_classes"]} classes, {blob["cfg"].data.input_description()}'
        if has != needs:
            raise BitmcuError(f"train.teacher {run}: has {has}; this run needs {needs}: train "
                              "the teacher on the same data")
        model = model_from_checkpoint(blob).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
    return Teacher(models, data.train_x, device)


def load_guide(cfg: Config, data: Dataset, device):
    """The frozen classifier whose cross-entropy on a decoder's prior samples guides it
    (``train.guide``), checked against the data; None without one."""
    run = cfg.train.guide
    if not run:
        return None
    try:
        blob = load_checkpoint(run)
    except BitmcuError as e:
        hint = "" if Path(run).exists() else "; train the guide classifier first"
        raise BitmcuError(f"config key 'train.guide': {e}{hint}") from None
    needs = f"{data.n_classes} classes, {cfg.data.input_description()}"
    has = f'{blob["n_classes"]} classes, {blob["cfg"].data.input_description()}'
    if blob["cfg"].model.family == "decoder" or has != needs or \
            blob["cfg"].data.dataset != cfg.data.dataset:
        what = "a decoder" if blob["cfg"].model.family == "decoder" else \
            f'a classifier of {blob["cfg"].data.dataset} ({has})'
        raise BitmcuError(f"train.guide {run}: is {what}; the guide is a classifier of this "
                          f"run's data ({cfg.data.dataset}, {needs})")
    model = model_from_checkpoint(blob).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class WeightAverage:
    """Exponential moving average of a model's parameters, updated after every optimizer step.

    QAT weights keep crossing quantization thresholds until the last step, so the quantized model
    of any single step is noisy; the average settles. Buffers (clipping ranges, calibrated shifts)
    are copied, not averaged: they are set by calibration, not by gradient steps.
    """

    def __init__(self, model, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # short memory while the run starts
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)
        self.copy_buffers(model)

    @torch.no_grad()
    def copy_buffers(self, model) -> None:
        mine, theirs = list(self.model.buffers()), list(model.buffers())
        if len(mine) != len(theirs):
            raise ValueError("weight average and model have different buffers")
        torch._foreach_copy_(mine, theirs)


class Teacher:
    """Frozen models whose mean logits on the clean training images are computed once."""

    def __init__(self, models: list, train_x: torch.Tensor, device, batch: int = 1000):
        self.models = models
        with torch.no_grad():
            self.clean = torch.cat([self._mean(train_x[i : i + batch].to(device))
                                    for i in range(0, len(train_x), batch)])

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(dim=0)

    @torch.no_grad()
    def logits(self, idx: torch.Tensor, xb: torch.Tensor, augmented: torch.Tensor | None):
        out = self.clean[idx].clone()
        if augmented is not None and augmented.any():
            rows = augmented.nonzero().squeeze(1).to(xb.device)  # CPU mask: no wait for the GPU
            out[rows] = self._mean(xb[rows])
        return out


def _loss(cfg: Config, out, yb, teacher_out):
    ce = F.cross_entropy(out, yb, label_smoothing=cfg.train.label_smoothing)
    if teacher_out is None:
        return ce
    t, a = cfg.train.distill_temperature, cfg.train.distill
    kd = F.kl_div(F.log_softmax(out / t, dim=1), F.log_softmax(teacher_out / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    return (1 - a) * ce + a * kd


def _objective(model, cfg: Config, xb, yb, t_out, ramp: float):
    """Forward pass and training loss (labels, teacher, ramped oscillation dampening)."""
    out = model(xb)
    loss = _loss(cfg, out, yb, t_out)
    if ramp > 0:
        loss = loss + ramp * sum(layer.dampening() for layer in model.layers)
    return out, loss


def _sharpness_aware(model, opt, objective, rho: float) -> None:
    """Replace the gradients by those at the worst nearby weights: w + rho * g / |g| (SAM).
    The step then starts from the original weights with the perturbed point's gradient."""
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        eps = [p.grad * (rho / (norm + 1e-12)) for p in params]
        for p, e in zip(params, eps, strict=True):
            p.add_(e)
    opt.zero_grad(set_to_none=True)
    objective()[1].backward()
    with torch.no_grad():
        for p, e in zip(params, eps, strict=True):
            p.sub_(e)


def _train_epoch(model, opt, data: Dataset, cfg: Config, epoch: int, device, bar,
                 teacher=None, average: WeightAverage | None = None) -> tuple[float, float]:
    gen = epoch_generator(cfg.seed, epoch)
    n = len(data.train_x)
    bs = cfg.train.batch_size
    perm = torch.randperm(n, generator=gen)
    steps = math.ceil(n / bs)
    aug = cfg.augment
    augmenter = Augmenter(aug.rotation, aug.translate, aug.scale, aug.elastic, aug.elastic_sigma,
                          aug.shear)
    model.train()
    # running sums stay on the device: a .item() per step would wait for the GPU every step
    tot_loss = torch.zeros((), dtype=torch.float64, device=device)
    tot_ok = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for s in range(steps):
        idx = perm[s * bs : (s + 1) * bs]
        xb = data.train_x[idx].float()
        sel = None
        if aug.enabled and aug.fraction > 0 and (aug.until is None or epoch < aug.until):
            sel = torch.rand(len(idx), generator=gen) < aug.fraction
            if sel.any():
                orig = data.train_orig[idx[sel]].float().unsqueeze(1)
                xb[sel] = downscale(augmenter(orig, gen), cfg.data.size, cfg.data.resize,
                                    crop=cfg.data.crop).squeeze(1).float()
        yb = data.train_y[idx]
        lr = lr_at(cfg, epoch + s / steps)
        for g in opt.param_groups:
            g["lr"] = lr
        xb, yb = xb.to(device), yb.to(device)
        t_out = None if teacher is None else teacher.logits(idx, xb, sel)
        ramp = cfg.train.dampen * (epoch + s / steps) / cfg.train.epochs
        objective = functools.partial(_objective, model, cfg, xb, yb, t_out, ramp)
        out, loss = objective()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.sam > 0:
            _sharpness_aware(model, opt, objective, cfg.train.sam)
        opt.step()
        if average is not None:
            average.update(model, epoch * steps + s)
        tot_loss += loss.detach().double() * len(idx)
        tot_ok += (out.detach().argmax(1) == yb).sum()
        seen += len(idx)
        if bar is not None:
            bar.update(1)
            if s % 20 == 0 or s == steps - 1:
                bar.set_postfix(loss=f"{tot_loss.item() / seen:.4f}",
                                acc=f"{100 * tot_ok.item() / seen:.2f}%", lr=f"{lr:.2e}")
    return tot_loss.item() / seen, tot_ok.item() / seen


def _image_errors(recon, target) -> torch.Tensor:
    """Summed squared pixel error of each image (pixels 0..1)."""
    return ((recon - target) / 255.0).pow(2).flatten(1).sum(1)


def pixel_error(recon, target) -> torch.Tensor:
    """Summed squared pixel error per image (pixels 0..1), batch mean: a decoder's
    reconstruction error."""
    return _image_errors(recon, target).mean()


def pixel_loss(cfg: Config, recon, target) -> tuple[torch.Tensor, torch.Tensor]:
    """(the reconstruction loss, :func:`pixel_error`) from one pass: the loss weighs each
    image's error as ``train.pixel_weight`` says (area: the batch's mean lit area over the
    image's own, 0.5..3)."""
    err = _image_errors(recon, target)
    loss = err
    if cfg.train.pixel_weight == "area":
        lit = target.float().flatten(1).sum(1)
        loss = err * (lit.mean() / lit.clamp(min=1.0)).clamp(0.5, 3.0)
    if cfg.train.ghost_weight:
        loss = loss + cfg.train.ghost_weight * ghost_errors(recon, target, cfg.train.ghost_loss)
    if cfg.train.dim_weight:
        loss = loss + cfg.train.dim_weight * dim_errors(recon, target)
    return loss.mean(), err.mean()


GHOST_LEVEL = 40  # a pixel above it is lit (the pip counter's outline threshold is 60)
GHOST_DARK = 32  # ... and a ghost where every target pixel within GHOST_REACH is below this
GHOST_REACH = 1  # at 2 the die's pips still grew and ran together (benchmarks/RESULTS.md)


def ghost_errors(recon, target, kind: str = "squared") -> torch.Tensor:
    """Each image's ghost penalty (``train.ghost_weight``): the summed squared (``kind``
    linear: plain) excess over GHOST_LEVEL (pixels 0..1) of the pixels lit where the target is
    dark within GHOST_REACH pixels all round: smudges and faint parts (another face's pip) in
    the picture's empty places, and parts grown past their edge, which the plain squared
    error, averaged over every pixel, hardly sees. The target's own parts and the pixel around
    them are left out, so a part a pixel off is not dimmed."""
    k = 2 * GHOST_REACH + 1
    near = F.max_pool2d(target.float().unsqueeze(1), k, 1, GHOST_REACH).squeeze(1)
    excess = (recon - GHOST_LEVEL).clamp(min=0) / 255.0
    if kind == "squared":
        excess = excess.pow(2)
    return (excess * (near < GHOST_DARK)).flatten(1).sum(1)


DIM_BRIGHT = 160  # a target pixel at least this bright is a part's body ...
DIM_LEVEL = 150  # ... and the picture's pixel there pays for its shortfall under this


def dim_errors(recon, target) -> torch.Tensor:
    """Each image's dim-part penalty (``train.dim_weight``): the summed squared shortfall under
    DIM_LEVEL (pixels 0..1) of the pixels where the target is bright: a pip drawn too faint
    for the pip counter (whose pips are >= 110) reads as a ghost and a missing pip."""
    short = (DIM_LEVEL - recon).clamp(min=0) / 255.0
    return (short.pow(2) * (target >= DIM_BRIGHT)).flatten(1).sum(1)


def decoder_loss(cfg: Config, recon, x, mu, logvar, y, gen: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder's loss per image: the pixel loss (:func:`pixel_loss`) + the latent's divergence
    from the prior: kl_weight * KL(q || N(0, 1)) for a CVAE, mmd_weight * :func:`class_mmd` for
    a WAE; returns (loss, summed squared pixel error, divergence), each a batch mean."""
    loss, rec = pixel_loss(cfg, recon, x)
    if cfg.train.objective == "wae":
        mmd = class_mmd(mu, y, gen)
        return loss + cfg.train.mmd_weight * mmd, rec, mmd
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1).mean()
    return loss + cfg.train.kl_weight * kl, rec, kl


MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # of 2 x latent size: the IMQ kernels' C


def class_mmd(z: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Maximum mean discrepancy between each class's latents in the batch and as many N(0, 1)
    draws, averaged over the classes weighted by their share of the batch (unbiased estimate,
    inverse multiquadratic kernels C / (C + |a - b|^2) summed over C = 2 d s, s in MMD_SCALES:
    Tolstikhin et al., "Wasserstein Auto-Encoders", 2018). Per class, because the sampler draws
    every class's latent from the same prior; classes seen once in the batch are left out."""

    p = torch.randn(z.shape, generator=gen).to(z.device)
    same = (y[:, None] == y[None, :]).to(z.dtype)
    n = same.sum(1)  # the size of each sample's class in the batch
    keep = (n > 1).to(z.dtype)
    off = same * (1 - torch.eye(len(y), dtype=z.dtype, device=z.device))
    w_pair = off * (keep / (len(y) * (n - 1).clamp(min=1)))[:, None]
    w_cross = same * (keep / (len(y) * n))[:, None]

    def kernel(a, b):
        d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return sum(c / (c + d2) for c in (2.0 * z.shape[1] * s for s in MMD_SCALES))

    return ((kernel(z, z) + kernel(p, p)) * w_pair).sum() - 2 * (kernel(z, p) * w_cross).sum()


def prior_latents(model, cfg: Config, n: int, gen: torch.Generator) -> torch.Tensor:
    """n latents drawn from the decoder's prior at the sampling temperature (on the CPU)."""
    if cfg.model.prior == "uniform":  # unit variance: uniform over +-sqrt(3)
        z = (torch.rand(n, model.latent, generator=gen) * 2 - 1) * math.sqrt(3)
    else:
        z = torch.randn(n, model.latent, generator=gen)
    return z * cfg.model.temperature


def prior_samples(model, cfg: Config, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The decoder's images of classes y from latents drawn from its prior at the sampling
    temperature: what the chip will draw."""
    return model.decode(quantize_latent(prior_latents(model, cfg, len(y), gen).to(y.device)), y)


def guide_loss(model, guide, cfg: Config, n: int, n_classes: int, gen: torch.Generator, device):
    """(cross-entropy, accuracy) of the guide on n images decoded from prior latents (at the
    sampling temperature) and random classes: what the chip will draw, judged by a classifier."""

    z = prior_latents(model, cfg, n, gen)  # drawn before the classes, as runs always have
    y = torch.randint(0, n_classes, (n,), generator=gen)
    z, y = z.to(device), y.to(device)
    logits = guide(model.decode(quantize_latent(z), y))
    return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()


def _train_decoder_epoch(model, opt, data: Dataset, cfg: Config, epoch: int, device, bar,
                         average: WeightAverage | None = None, guide=None,
                         factors: dict | None = None, critic=None
                         ) -> tuple[float, float, float | None, float | None]:
    """One epoch of decoder training (augmentation does not apply: the decoder learns the
    images as they are): CVAE, or with ``factors`` (:func:`load_factors`) the clean die of
    each image's renderer latent; with a guide its cross-entropy on prior samples; with a
    critic (:class:`.critic.Adversary`) one critic step per batch and its verdict on the
    batch's prior samples. Returns (mean loss, mean squared error per pixel,
    the guide's accuracy on the prior samples or None, the critic's mean loss or None)."""

    gen = epoch_generator(cfg.seed, epoch)
    n, bs = len(data.train_x), cfg.train.batch_size
    perm = torch.randperm(n, generator=gen)
    steps = math.ceil(n / bs)
    model.train()
    tot = torch.zeros(3, dtype=torch.float64, device=device)
    critic_loss = 0.0
    for s in range(steps):
        idx = perm[s * bs : (s + 1) * bs]
        yb = data.train_y[idx].to(device)
        lr = lr_at(cfg, epoch + s / steps)
        for g in opt.param_groups:
            g["lr"] = lr
        if factors is None:
            xb = data.train_x[idx].float().to(device)
            recon, mu, logvar = model(xb, yb, gen, noise=cfg.train.objective == "cvae")
            loss, rec, _ = decoder_loss(cfg, recon, xb, mu, logvar, yb, gen)
        else:
            tb = factors["train_t"][idx].float().to(device)
            recon = model.decode(quantize_latent(factors["train_z"][idx].to(device)), yb)
            loss, rec = pixel_loss(cfg, recon, tb)
        hit = torch.zeros((), device=device)
        if guide is not None:
            ce, hit = guide_loss(model, guide, cfg, len(idx), data.n_classes, gen, device)
            loss = loss + cfg.train.guide_weight * ce
        if critic is not None:
            fake = prior_samples(model, cfg, yb, gen)
            real = (xb if factors is None else tb).float()
            critic_loss += critic.step(real, fake, yb, gen) * len(idx)
            loss = loss + cfg.train.adversarial * critic.generator_loss(fake, yb, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            average.update(model, epoch * steps + s)
        tot += torch.stack([loss.detach(), rec.detach(), hit.detach()]).double() * len(idx)
        if bar is not None:
            bar.update(1)
            if s % 20 == 0 or s == steps - 1:
                bar.set_postfix(loss=f"{tot[0].item() / min(n, (s + 1) * bs):.3f}",
                                lr=f"{lr:.2e}")
    tot = (tot / n).tolist()
    return (tot[0], tot[1] / (data.size * data.size), tot[2] if guide is not None else None,
            critic_loss / n if critic is not None else None)


def load_factors(cfg: Config, data: Dataset) -> dict[str, torch.Tensor] | None:
    """``train.objective: factors``: each training and test image's renderer latent and clean
    die (data/dice.py), as tensors (train_z, train_t, test_z, test_t); None for cvae."""
    if cfg.train.objective != "factors":
        return None

    a = dice_factor_arrays(cfg.data.dice, cfg.data.size, cfg.model.latent, cache_dir(),
                           cfg.model.prior)
    n = len(data.train_x)
    f = {k: torch.from_numpy(v[:n] if k.startswith("train") else v) for k, v in a.items()}
    if cfg.train.factor_range < 1.0:
        f["train_z"], f["train_t"] = within_range(f["train_z"], f["train_t"], data.train_y[:n],
                                                  cfg.train.factor_range)
    return f


def within_range(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor, share: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``train.factor_range``: the training latents z (uniform prior: each factor linear over
    +-sqrt(3)) and clean targets t with every latent outside the middle ``share`` of the range
    replaced, with its target, by one of the same class inside it (drawn with a fixed seed), so
    the decoder spends its capacity where the sampler's latents land."""
    inside = (z.abs() <= share * math.sqrt(3)).all(1)
    pick_rng = np.random.default_rng(0)
    z, t = z.clone(), t.clone()
    for c in torch.unique(y):
        out = torch.nonzero((y == c) & ~inside).flatten().numpy()
        pool = torch.nonzero((y == c) & inside).flatten().numpy()
        if not len(pool):
            raise BitmcuError(f"config key 'train.factor_range': {share} leaves no training image "
                              f"of class {int(c)} inside it; widen it")
        pick = torch.from_numpy(pick_rng.choice(pool, len(out)))
        z[out], t[out] = z[pick], t[pick]
    return z, t


@torch.no_grad()
def evaluate_decoder(model, cfg: Config, x: torch.Tensor, y: torch.Tensor, device=None,
                     batch: int = 2000, factors: dict | None = None) -> dict:
    """Test loss, reconstruction error per pixel and KL of a decoder (latent = the encoder's
    mean, no sampling noise); with ``factors``, the error of the clean dice drawn from the test
    images' renderer latents (no KL: the latent is given, not inferred)."""

    device = device or torch.device("cpu")
    model.eval()
    gen = torch.Generator().manual_seed(0)  # a WAE's prior draws: the same at every epoch
    tot = np.zeros(3)
    for i in range(0, len(x), batch):
        yb = y[i : i + batch].to(device)
        if factors is None:
            xb = x[i : i + batch].float().to(device)
            mu, logvar = model.encode(xb, yb)
            recon = model.decode(quantize_latent(mu), yb)
            loss, rec, kl = decoder_loss(cfg, recon, xb, mu, logvar, yb, gen)
        else:
            tb = factors["test_t"][i : i + batch].float().to(device)
            recon = model.decode(quantize_latent(factors["test_z"][i : i + batch].to(device)), yb)
            loss, rec = pixel_loss(cfg, recon, tb)
            kl = torch.zeros(())
        tot += np.array([loss.item(), rec.item(), kl.item()]) * len(yb)
    tot /= max(1, len(x))
    out = {"test_loss": float(tot[0]), "test_mse": float(tot[1] / x.shape[-1] ** 2)}
    if factors is not None:
        return out
    return {**out, ("test_mmd" if cfg.train.objective == "wae" else "test_kl"): float(tot[2])}


def new_run_dir(base: Path, name: str) -> Path:
    run = base / name
    i = 1
    while run.exists() and any(run.iterdir()):
        run = base / f"{name}-{i}"
        i += 1
    return run


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


# What a resumed run may change: how long it trains and where, not what it learns.
RESUME_KEYS = ("train.epochs", "train.device", "train.threads")


def resume_config(cfg: Config, overrides: list[str]) -> Config:
    """The saved config with ``--set`` overrides of RESUME_KEYS applied (others refused)."""
    for text in overrides:
        key = parse_override(text)[0]
        if key not in RESUME_KEYS:
            raise BitmcuError(f"--resume continues a run with its saved config; --set may change "
                              f"only {', '.join(RESUME_KEYS)}, not {key!r}")
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides))


def train(cfg: Config, run_dir: Path | None = None, resume: str | Path | None = None,
          epochs: int | None = None, quiet: bool = False, log=print,
          overrides: list[str] | None = None, on_epoch=None) -> Path:
    """Train (or resume) a run; returns the run directory. Raises KeyboardInterrupt when stopped.
    A resumed run takes ``overrides`` of RESUME_KEYS (``epochs`` is train.epochs=N). The run
    directory is locked meanwhile: a second process that wants it is refused. ``on_epoch``, if
    given, is called with each epoch's metrics once they are checkpointed; an exception it
    raises stops the run there (a search prunes a trial so)."""
    if resume is not None:
        run_dir = resolve_checkpoint(resume).parent
    else:
        run_dir = Path(run_dir) if run_dir else new_run_dir(Path("runs"), cfg.name)
    with locked(run_dir):
        return _train(cfg, run_dir, resume, epochs, quiet, log, overrides, on_epoch)


def check_config_file(run_dir: Path, saved: Config, overrides: list[str], log=print) -> None:
    """A resumed run keeps its checkpoint's config: a ``config.yaml`` edited since is refused,
    naming the keys that differ, rather than ignored. Keys a resume may change (RESUME_KEYS)
    that the file sets otherwise, without a ``--set`` for them, are named in one line."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    data = read_yaml(path)
    try:
        edited = config_from_dict(drop_retired_keys(data if isinstance(data, dict) else {}))
    except BitmcuError as e:
        raise BitmcuError(f"{path}: edited since the run was trained, and refused ({e}); a "
                          "resumed run keeps its checkpoint's config: undo the edit") from None
    diffs = differences(saved.to_dict(), edited.to_dict())
    changed = [d for d in diffs if d[0] not in RESUME_KEYS]
    if changed:
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in the file"
                          for k, a, b in changed[:3]) + ("; ..." if len(changed) > 3 else "")
        raise BitmcuError(f"{path} was edited since the run was trained ({shown}); a resumed "
                          "run keeps its checkpoint's config: undo the edit, or train the "
                          f"edited config as a new run (bitmcu train {path} --out NEW_DIR)")
    given = {parse_override(t)[0] for t in overrides}
    for k, a, b in diffs:
        if k not in given:
            log(f"{path} sets {k} {b!r}, the checkpoint {a!r}: the run keeps {a!r}; "
                f"give --set {k}={b} to change it")


# files a finished run has beside its checkpoint
RUN_FILES = ("config.yaml", "metrics.jsonl", "curves.png", "weights.png")


def _resume(run_dir: Path, resume, epochs, overrides, log):
    """A resumed run's (config, first epoch, metrics so far, checkpoint); None where the run
    is finished (the files a killed run still owed are written)."""
    blob = load_checkpoint(resume)
    changes = list(overrides or []) + ([] if epochs is None else [f"train.epochs={epochs}"])
    check_config_file(run_dir, blob["cfg"], changes, log)
    cfg = resume_config(blob["cfg"], changes) if changes else blob["cfg"]
    start_epoch = blob["epoch"]
    metrics = list(blob["metrics"])[:start_epoch]
    if start_epoch < cfg.train.epochs and blob.get("optimizer") is None:
        raise BitmcuError(f"{blob['path']}: holds no optimizer state (a model shipped "
                          "without it), so it cannot be resumed as the same run; train a new "
                          f"run from its config: bitmcu train {run_dir / 'config.yaml'}")
    if start_epoch < cfg.train.epochs:
        return cfg, start_epoch, metrics, blob
    missing = [f for f in RUN_FILES if not (run_dir / f).exists()]
    if not missing:
        log(f"{run_dir}: already trained for {start_epoch} epochs; nothing to do")
        return None
    # killed after its last checkpoint: write what the run still owes
    log(f"{run_dir}: trained for {start_epoch} epochs; writing {', '.join(missing)}")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(blob["cfg"].to_dict(), sort_keys=False))
    _write_metrics(run_dir / "metrics.jsonl", metrics)
    write_plots(model_from_checkpoint(blob), blob["cfg"], metrics, run_dir)
    return None


def _epoch_line(cfg: Config, split: str, m: dict) -> str:
    """The line printed after an epoch (a classifier's accuracies, a decoder's losses)."""
    head = f"epoch {m['epoch']:>3}/{cfg.train.epochs}  loss {m['train_loss']:.4f}  "
    if "train_bpc" in m:
        return (head + f"train {m['train_bpc']:.4f} bpc  {split} {m[split + '_bpc']:.4f} bpc  "
                f"({m['seconds']:.1f}s)")
    if "train_acc" in m:
        return (head + f"train {100 * m['train_acc']:.2f}%  {split} "
                f"{100 * m[split + '_acc']:.2f}%  ({m['seconds']:.1f}s)")
    return (head + f"{split} loss {m[split + '_loss']:.4f} (mse/pixel {m[split + '_mse']:.5f}"
            + (f", kl {m[split + '_kl']:.2f})" if split + "_kl" in m else
               f", mmd {m[split + '_mmd']:.4f})" if split + "_mmd" in m else ")")
            + (f"  guide {100 * m['train_guide_acc']:.1f}%" if "train_guide_acc" in m else "")
            + (f"  critic {m['train_critic_loss']:.3f}" if "train_critic_loss" in m else "")
            + f"  ({m['seconds']:.1f}s)")


def _train(cfg: Config, run_dir: Path, resume, epochs, quiet, log, overrides, on_epoch) -> Path:
    if resume is not None:
        state = _resume(run_dir, resume, epochs, overrides, log)
        if state is None:
            return run_dir
        cfg, start_epoch, metrics, blob = state
    else:
        if (run_dir / "checkpoint.pt").exists():
            raise BitmcuError(f"{run_dir} already holds a run; resume it with "
                              f"`bitmcu train --resume {run_dir}` or choose another --out")
        start_epoch, metrics, blob = 0, [], None

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    text = cfg.model.family == "charrnn"
    data = load_text_data(cfg) if text else load_data(cfg)
    n_classes = data.n_tokens if text else data.n_classes  # a text model's: its tokens
    torch.manual_seed(cfg.seed)
    if blob is not None and blob["n_classes"] != n_classes:
        raise BitmcuError(f"{resume}: checkpoint has {blob['n_classes']} classes, data has "
                          f"{n_classes}")
    model = build_model(cfg, n_classes) if blob is None else model_from_checkpoint(blob, live=True)
    if text and blob is None:
        model.set_vocab(data.vocab)
    # on its device before the optimizer exists: a loaded optimizer state follows the parameters
    model.to(device)
    opt = make_optimizer(cfg, model)
    if blob is not None and blob.get("optimizer") is not None:
        opt.load_state_dict(blob["optimizer"])
    average = None
    if cfg.train.ema > 0:
        average = WeightAverage(model, cfg.train.ema)
        if blob is not None:
            average.model.load_state_dict(blob["model"])
    final = model if average is None else average.model  # what the run delivers
    teacher = load_text_teacher(cfg, data, device) if text else load_teacher(cfg, data, device)
    decoder = cfg.model.family == "decoder"
    if decoder and cfg.model.prior == "mixture":
        check_mixture_data(data.train_y.numpy(), n_classes, cfg.model.mixture)
    if decoder and teacher is not None:
        raise BitmcuError("config key 'train.teacher': a decoder (model.family decoder) is not "
                          "distilled; set train.teacher=null (train.guide guides its samples)")
    guide = load_guide(cfg, data, device) if decoder else None
    factors = load_factors(cfg, data)
    critic = None
    if decoder and cfg.train.adversarial > 0:
        critic = Adversary(n_classes, cfg.train.lr, device)
        if blob is not None and blob.get("critic") is not None:
            critic.load_state_dict(blob["critic"])

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tb = _tensorboard(run_dir)
    what = (f"{len(data.train)} training lines, {n_classes} tokens" if text else
            f"{len(data.train_x)} training images {data.size}x{data.size}, {n_classes} classes")
    log(f"run {run_dir}: {cfg.name}, {sum(p.numel() for p in model.parameters())} parameters, "
        f"{what}, device {device}" + (f", resuming after epoch {start_epoch}" if start_epoch else ""))

    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        steps = math.ceil(len(data.train if text else data.train_x) / cfg.train.batch_size)
        for epoch in range(start_epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            _set_quantize(model, average, epoch >= cfg.model.quant_from)
            if epoch < cfg.clip_epochs() and text:
                model.update_clips(calib=calibration_tokens(data).to(device))
                if average is not None:
                    average.copy_buffers(model)
            elif epoch < cfg.clip_epochs():
                calib = data.train_x[:1000].to(device)
                y_calib = data.train_y[:1000].to(device)
                model.update_clips(calib=calib if not decoder else (calib, y_calib) if
                                   factors is None else (calib, y_calib,
                                                         factors["train_z"][:1000].to(device)))
                if average is not None:
                    average.copy_buffers(model)
            bar = None if quiet else tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                                          leave=False, dynamic_ncols=True, disable=None)
            if text:
                tr_loss, tr_bpc = train_text_epoch(model, opt, data, cfg, epoch, device, bar,
                                                   lr_at, epoch_generator, average, teacher)
            elif decoder:
                tr_loss, tr_mse, tr_guide, tr_critic = _train_decoder_epoch(
                    model, opt, data, cfg, epoch, device, bar, average, guide, factors, critic)
            else:
                tr_loss, tr_acc = _train_epoch(model, opt, data, cfg, epoch, device, bar,
                                               teacher, average)
            if bar is not None:
                bar.close()
            if text:
                ev = evaluate_text(final, data.test, data, device)
                m = {"epoch": epoch + 1, "train_loss": tr_loss, "train_bpc": tr_bpc,
                     f"{data.split}_loss": ev["loss"], f"{data.split}_bpc": ev["bpc"]}
            elif decoder:
                ev = evaluate_decoder(final, cfg, data.test_x, data.test_y, device, factors=factors)
                m = {"epoch": epoch + 1, "train_loss": tr_loss, "train_mse": tr_mse,
                     **({} if tr_guide is None else {"train_guide_acc": tr_guide}),
                     **({} if tr_critic is None else {"train_critic_loss": tr_critic}),
                     **{data.split + k[4:]: v for k, v in ev.items()}}
            else:
                ev = evaluate(final, data.test_x, data.test_y, device)
                m = {"epoch": epoch + 1, "train_loss": tr_loss, "train_acc": tr_acc,
                     f"{data.split}_loss": ev.loss, f"{data.split}_acc": ev.acc}
            mixture = None
            if decoder and cfg.model.prior == "mixture" and epoch + 1 == cfg.train.epochs:
                mixture = fit_mixture(encoder_means(final, data.train_x, data.train_y),
                                      data.train_y.numpy(), n_classes, cfg.model.mixture,
                                      cfg.seed)
            m.update(lr=lr_at(cfg, epoch + 1), seconds=time.perf_counter() - t0)
            metrics.append(m)
            save_checkpoint(run_dir / "checkpoint.pt", final, opt, cfg, n_classes, epoch + 1,
                            metrics, live=None if average is None else model,
                            critic=None if critic is None else critic.state_dict(),
                            mixture=mixture)
            _write_metrics(run_dir / "metrics.jsonl", metrics)
            if on_epoch is not None:
                on_epoch(m)
            if tb is not None:
                for k, v in m.items():
                    if k != "epoch":
                        tb.add_scalar(k, v, epoch + 1)
            if not quiet:
                log(_epoch_line(cfg, data.split, m))
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, old)
        _set_quantize(model, average, True)
        if tb is not None:
            tb.close()
    final.cpu()
    write_plots(final, cfg, metrics, run_dir)
    return run_dir


def _set_quantize(model, average: WeightAverage | None, on: bool) -> None:
    """Quantized (on) or float weights (the warm-up before `model.quant_from`)."""
    for m in [model, *([] if average is None else [average.model])]:
        for layer in m.modules():
            if isinstance(layer, QuantWeights):
                layer.quantize = on


def _write_metrics(path: Path, metrics: list[dict]) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text("".join(json.dumps(m) + "\n" for m in metrics))
    os.replace(tmp, path)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_plots(model, cfg: Config, metrics: list[dict], run_dir: Path) -> None:

    plot_curves(metrics, run_dir / "curves.png")
    plot_weights(model, run_dir / "weights.png")
    plot_first_layer(model, cfg.data.size, run_dir / "first_layer.png")
