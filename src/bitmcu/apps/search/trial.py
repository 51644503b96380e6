"""One trial of a budget search: fit check before training, training with pruning, then export,
verify, firmware and profile, all on the held-out validation split (never the test set).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.errors import BitmcuError
from ...deploy import reference
from ...deploy.export import model_report, write_export
from ...deploy.ir import IntModel
from ...deploy.verify import compare_c
from ...target.chips import get_chip
from ...target.emulator import measure_export
from ...target.firmware import FlashOverflow, RamOverflow
from ...train import load_checkpoint, load_data, train
from ...train.lower import lower
from ...train.models import build_model
from .space import Space

VERIFY_IMAGES = 1000  # held-out images on which the host C engine must equal the reference
# An untrained candidate's cycles overestimate the trained model's (fewer activations are zero
# before training; the reference model: 176,410 untrained, 152,473 trained): a candidate is
# pruned before training only when its estimate is above the cycle budget by more than this.
CYCLES_SLACK = 1.3


@dataclass
class Budget:
    """What a trial's firmware may use; None: the chip's whole flash or RAM, no cycle limit."""

    mcu: str
    max_flash: int | None = None
    max_ram: int | None = None
    max_cycles: int | None = None

    def __post_init__(self):
        chip = get_chip(self.mcu)
        self.mcu = chip.name
        self.max_flash = self.max_flash or chip.flash_kb * 1024
        self.max_ram = self.max_ram or chip.ram_kb * 1024
        for name in ("max_flash", "max_ram", "max_cycles"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BitmcuError(f"--{name.replace('_', '-')} {v}: must be >= 1")

    def violations(self, attrs: dict) -> dict[str, float]:
        """Optuna constraint values of a trial's figures: the share by which each is over its
        limit (<= 0: within the budget); a figure not measured (yet) counts as within."""
        return {"flash": attrs.get("flash", 0) / self.max_flash - 1,
                "ram": attrs.get("ram", 0) / self.max_ram - 1,
                "cycles": 0.0 if self.max_cycles is None else
                attrs.get("cycles", 0) / self.max_cycles - 1}

    def over(self, attrs: dict) -> str:
        """What of ``attrs`` is over the budget, in words."""
        parts = []
        for what, v, lim in (("flash", attrs.get("flash", 0), self.max_flash),
                             ("RAM", attrs.get("ram", 0), self.max_ram),
                             ("cycles", attrs.get("cycles", 0), self.max_cycles)):
            if lim is not None and v > lim:
                parts.append(f"{what} {v:,} > {lim:,}")
        return "over the budget: " + ", ".join(parts)

    def before_training(self, pre: dict) -> str | None:
        """Why a candidate whose untrained firmware has the figures ``pre`` is pruned before
        training, or None: flash and RAM are the trained model's and must fit; its cycles are
        an estimate, pruned only beyond :data:`CYCLES_SLACK` times the cycle budget."""
        slow = self.max_cycles is not None and pre["cycles"] > CYCLES_SLACK * self.max_cycles
        if pre["flash"] > self.max_flash or pre["ram"] > self.max_ram or slow:
            return self.over(pre) + (f" (cycles of the untrained model, more than "
                                     f"{CYCLES_SLACK}x the budget)" if slow else "")
        return None

    def fits(self, attrs: dict) -> bool:
        return "flash" in attrs and all(v <= 0 for v in self.violations(attrs).values())

    def to_dict(self) -> dict:
        return asdict(self)


def measure(model: IntModel, images: np.ndarray, labels: np.ndarray, out: Path, mcu: str,
            n_images: int, cycle_images: int | None = None) -> dict:
    """Export ``model`` with ``n_images`` of ``images`` embedded, build its firmware and profile
    it: on the embedded images, or on the first ``cycle_images`` (median cycles), written in
    turn over them in the emulated flash."""
    report = model_report(model, mcu, split="val")
    write_export(model, out, images, labels, report, target=mcu, n_images=n_images,
                 command="bitmcu search")
    run = {}
    if cycle_images:
        _, pred = reference.run(model, images[:cycle_images])
        run = {"images": images[:cycle_images], "expected": pred}
    return {"weight_bytes": model.weight_bytes,
            **measure_export(out, mcu, n_images, **run).figures()}


def untrained_model(cfg, data) -> IntModel:
    """The integer model of a candidate before training: its sizes (weight bytes, arena) and
    its code are those of the trained model; only the weight values differ."""
    import torch


    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.n_classes)
    model.update_clips(calib=data.train_x[:256])
    blob = {"cfg": cfg, "model": model.state_dict(), "n_classes": data.n_classes,
            "path": f"candidate {cfg.name}"}
    return lower(blob)


def preflight(cfg, data, out: Path, budget: Budget, n_images: int) -> dict:
    """Flash, RAM and cycles of the candidate's firmware, built from its untrained weights: the
    linker's figures are the trained model's; a model too big for the chip is found here, at
    no training cost. Returns the figures with ``fits_chip`` (False: ``reason`` says why)."""
    chip = get_chip(budget.mcu)
    model = untrained_model(cfg, data)
    x, y = data.test_x.numpy(), data.test_y.numpy()  # the held-out split (data.validation)
    try:
        return {"fits_chip": True, **measure(model, x, y, out, budget.mcu, n_images)}
    except FlashOverflow as e:
        return {"fits_chip": False, "reason": str(e), "weight_bytes": model.weight_bytes,
                "flash": chip.flash_kb * 1024 + e.over}
    except RamOverflow as e:
        return {"fits_chip": False, "reason": str(e), "weight_bytes": model.weight_bytes,
                "ram": chip.ram_kb * 1024 + e.over}


def run_name(study: str, number: int) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", study).lstrip("._+-")[:40] + f"-t{number}"


class Objective:
    """Optuna objective: (validation accuracy of the integer model, cycles per inference)."""

    def __init__(self, space: Space, budget: Budget, root: Path, threads: int | None,
                 log=print):
        self.space, self.budget, self.root, self.threads, self.log = space, budget, root, threads, log

    def __call__(self, trial):
        import optuna

        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # kept with the trial (Optuna only logs it), and the study goes on
            msg = str(e) if isinstance(e, BitmcuError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", msg[-2000:])
            self.log(f"trial {trial.number} failed: {msg.strip().splitlines()[-1] if msg else ''}")
            raise

    def _run(self, trial):
        import optuna


        t_start = time.perf_counter()
        listed = trial.user_attrs.get("set", {})  # a listed trial's keys outside the space
        values = {p.key: p.suggest(trial) for p in self.space.params if p.key not in listed}
        values.update(listed)
        name = run_name(trial.study.study_name, trial.number)
        values.setdefault("name", name)
        if self.threads:
            values.setdefault("train.threads", self.threads)
        run_dir = (self.root / trial.study.study_name / f"trial-{trial.number:04d}").absolute()
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        cfg = self.space.config(values)
        trial.set_user_attr("config", {k: v for k, v in values.items()
                                       if k not in ("name", "train.threads")})
        if cfg.model.family not in ("fc", "cnn"):
            raise BitmcuError(f"model.family {cfg.model.family!r}: the search scores "
                              "classifiers (fc, cnn) by accuracy")
        data = load_data(cfg)
        pre = preflight(cfg, data, run_dir / "candidate", self.budget, self.space.images)
        for k, v in pre.items():
            trial.set_user_attr(k, v)
        if not pre["fits_chip"]:
            self._constrain(trial, pre)
            self.log(f"trial {trial.number}: pruned before training: {pre['reason']}")
            raise optuna.TrialPruned(pre["reason"])
        why = self.budget.before_training(pre)
        if why is not None:
            trial.set_user_attr("reason", why)
            self._constrain(trial, pre)
            self.log(f"trial {trial.number}: pruned before training: {why}")
            raise optuna.TrialPruned(why)
        self.log(f"trial {trial.number}: {json.dumps(trial.user_attrs['config'])}: flash "
                 f"{pre['flash']}, RAM {pre['ram']}, about {pre['cycles']:,} cycles; training")

        curve: list[float] = []

        def on_epoch(m: dict) -> None:
            curve.append(m["val_acc"])
            trial.set_user_attr("curve", curve)
            self.log(f"trial {trial.number}: epoch {len(curve)}/{cfg.train.epochs}, validation "
                     f"{100 * m['val_acc']:.2f}% (float)")
            rival = self._dominated(trial, len(curve), cfg.train.epochs, m["val_acc"],
                                    pre["cycles"])
            if rival is not None:
                why = (f"at epoch {len(curve)} validation {100 * m['val_acc']:.2f}% is below "
                       f"trial {rival.number}'s (fewer or as many cycles) by more than the margin")
                trial.set_user_attr("reason", why)
                self._constrain(trial, pre)
                self.log(f"trial {trial.number}: pruned: {why}")
                raise optuna.TrialPruned(why)

        t0 = time.perf_counter()
        train(cfg, run_dir=run_dir / "run", quiet=True, log=lambda *a: None, on_epoch=on_epoch)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - t0, 1))
        blob = load_checkpoint(run_dir / "run")
        model = lower(blob)
        x, y = data.test_x.numpy(), data.test_y.numpy()  # the held-out split
        _, pred = reference.run(model, x)
        val_acc = float((pred == y).mean())

        compare_c(model, x[:VERIFY_IMAGES])  # C == reference, or BitmcuError
        got = measure(model, x, y, run_dir / "export", self.budget.mcu, self.space.images,
                      self.space.cycle_images)
        for k, v in got.items():
            trial.set_user_attr(k, v)
        self._constrain(trial, got)
        trial.set_user_attr("cycles_untrained", pre["cycles"])
        trial.set_user_attr("val_acc", val_acc)
        trial.set_user_attr("val_acc_float", curve[-1])
        trial.set_user_attr("epochs", cfg.train.epochs)
        trial.set_user_attr("seconds", round(time.perf_counter() - t_start, 1))
        self.log(f"trial {trial.number}: validation {100 * val_acc:.2f}% (integer), "
                 f"{got['cycles']:,} cycles, flash {got['flash']}, RAM {got['ram']}"
                 + ("" if self.budget.fits(got) else f" ({self.budget.over(got)})"))
        return val_acc, got["cycles"]

    def _constrain(self, trial, attrs: dict) -> None:
        """The budget as Optuna constraints, set once per trial (Optuna keeps the first value):
        the sampler learns which regions do not fit."""
        for k, v in self.budget.violations(attrs).items():
            trial.set_constraint(k, v)

    def _dominated(self, trial, epoch: int, epochs: int, acc: float, cycles: int):
        """A finished trial within the budget, as fast or faster (untrained estimates compared),
        that was ahead of this one by more than the margin at the same point of its training;
        None if there is none."""
        import optuna

        if self.space.pruning is None or epoch < self.space.pruning["warmup"] or epoch == epochs:
            return None
        margin = self.space.pruning["margin"]
        for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            other = t.user_attrs.get("curve") or []
            theirs = t.user_attrs.get("cycles_untrained", t.user_attrs.get("cycles"))
            if not other or not self.budget.fits(t.user_attrs) or theirs > cycles:
                continue
            at = other[min(len(other), max(1, round(epoch / epochs * len(other)))) - 1]
            if at > acc + margin:
                return t
        return None
