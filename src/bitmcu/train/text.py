"""Training and evaluation of character models (model.family charrnn) on text lines.

A line's loss is the cross-entropy of each of its tokens given those before it, END included
(the model reads END first, as the start of the line). Bits per character (bpc) is that
cross-entropy in bits, averaged over every predicted token of the split: a line of n characters
counts n + 1 tokens (its end too), as the chip generates them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import BitmcuError
from ..data.text import TextData, load_text
from .config import Config


def load_text_data(cfg: Config) -> TextData:
    d = cfg.data
    return load_text(d.dataset, d.context, d.data_dir, d.train_limit, d.validation)


def line_loss(model, tokens: torch.Tensor, lengths: torch.Tensor, teacher=None,
              cfg: Config | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(summed cross-entropy in nats, predicted tokens, the summed training loss) of a batch of
    encoded lines; with a teacher (train.teacher), the loss mixes in the KL divergence from
    its predictions at train.distill_temperature, weighted by train.distill."""
    t = int(lengths.max())
    logits = model(tokens[:, :t])  # (B, t, V)
    target = tokens[:, 1 : t + 1]
    mask = torch.arange(t, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)
    flat = logits.reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, target.reshape(-1), reduction="none").reshape(target.shape)
    ce = (ce * mask).sum()
    if teacher is None:
        return ce, int(mask.sum()), ce
    with torch.no_grad():
        soft = teacher(tokens[:, :t]).reshape(flat.shape)
    temp, a = cfg.train.distill_temperature, cfg.train.distill
    kd = F.kl_div(F.log_softmax(flat / temp, dim=1), F.log_softmax(soft / temp, dim=1),
                  reduction="none", log_target=True).sum(1).reshape(target.shape)
    return ce, int(mask.sum()), (1 - a) * ce + a * (kd * mask).sum() * temp * temp


def load_text_teacher(cfg: Config, data: TextData, device):
    """The character model to distill from (train.teacher: one run), of the same vocabulary."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    if not cfg.train.teacher:
        return None
    if not isinstance(cfg.train.teacher, str):
        raise BitmcuError("config key 'train.teacher': a character model distills from one run")
    blob = load_checkpoint(cfg.train.teacher)
    if blob["cfg"].model.family != "charrnn":
        raise BitmcuError(f"train.teacher {cfg.train.teacher}: model.family "
                          f"{blob['cfg'].model.family}; a character model's teacher is one too")
    net = model_from_checkpoint(blob).to(device)
    if net.vocab_text() != data.vocab:
        raise BitmcuError(f"train.teacher {cfg.train.teacher}: its vocabulary differs from this "
                          "run's lines: train the teacher on the same data")
    return net


def calibration_tokens(data: TextData, n: int = 1000) -> torch.Tensor:
    """The first n training lines, encoded, cut to their longest: the cells' shifts' data."""
    x, lengths = data.encode(data.train[:n])
    return x[:, : int(lengths.max())]


def train_text_epoch(model, opt, data: TextData, cfg: Config, epoch: int, device, bar, lr_at,
                     epoch_generator, average=None, teacher=None) -> tuple[float, float]:
    """One epoch over the training lines in a seeded order; returns (mean loss per token in
    nats, training bpc)."""
    gen = epoch_generator(cfg.seed, epoch)
    x, lengths = data.encode(data.train)
    n, bs = len(x), cfg.train.batch_size
    perm = torch.randperm(n, generator=gen)
    steps = math.ceil(n / bs)
    model.train()
    tot = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for s in range(steps):
        idx = perm[s * bs : (s + 1) * bs]
        lr = lr_at(cfg, epoch + s / steps)
        for g in opt.param_groups:
            g["lr"] = lr
        ce, k, total = line_loss(model, x[idx].to(device), lengths[idx].to(device), teacher, cfg)
        loss = total / k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            average.update(model, epoch * steps + s)
        tot += ce.detach().double()
        count += k
        if bar is not None:
            bar.update(1)
            if s % 20 == 0 or s == steps - 1:
                bar.set_postfix(bpc=f"{tot.item() / count / math.log(2):.3f}", lr=f"{lr:.2e}")
    nats = tot.item() / count
    return nats, nats / math.log(2)


@torch.no_grad()
def evaluate_text(model, lines: list[str], data: TextData, device=None,
                  batch: int = 2000) -> dict:
    """Loss per token (nats) and bits per character of ``lines``."""
    device = device or torch.device("cpu")
    model.eval()
    x, lengths = data.encode(lines)
    tot, count = 0.0, 0
    for i in range(0, len(x), batch):
        ce, k, _ = line_loss(model, x[i : i + batch].to(device),
                             lengths[i : i + batch].to(device))
        tot += ce.item()
        count += k
    nats = tot / max(1, count)
    return {"loss": nats, "bpc": nats / math.log(2)}


def bigram_bpc(data: TextData, lines: list[str], alpha: float = 0.1) -> float:
    """Bits per character of a count-based bigram model of the training lines (add-alpha
    smoothing, alpha chosen once: 0.1) on ``lines``: the baseline a character model must beat."""
    v = data.n_tokens
    counts = np.full((v, v), alpha)
    x, lengths = data.encode(data.train)
    for row, n in zip(x.numpy(), lengths.numpy(), strict=True):
        np.add.at(counts, (row[:n], row[1 : n + 1]), 1)
    logp = np.log2(counts / counts.sum(axis=1, keepdims=True))
    x, lengths = data.encode(lines)
    tot = sum(-logp[row[:n], row[1 : n + 1]].sum() for row, n in zip(x.numpy(), lengths.numpy(),
                                                                     strict=True))
    return float(tot / lengths.sum().item())
