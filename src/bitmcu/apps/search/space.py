"""Search space files for `bitmcu search`: a base config, fixed keys, and per config key a list
of choices or a numeric range; optionally a fixed list of trials to run first.

    base: reference                  # a config file or a name under configs/ (null: defaults)
    validation: 5000                 # training images held out to score the trials on
    images: 1                        # held-out images embedded in each trial's firmware
    cycle_images: 16                 # held-out images whose median cycles a trial records
    set: {train.epochs: 30}          # the same for every trial
    space:
      model.hidden: [[64, 64, 64], [96, 64]]            # choices
      train.lr: {low: 0.001, high: 0.004, log: true}     # a float range
      model.channels: {low: 16, high: 64, step: 8}       # an integer range
    trials:                          # enqueued before any sampled trial, in this order
      - {model.hidden: [96, 64], seed: 1}
    pruning: {warmup: 3, margin: 0.003}   # or false
    sampler: tpe                     # tpe | nsga2 | random

Every key is checked against the base config before anything runs: an unknown key, an empty list
of choices, a range whose low is above its high, or a choice (or range end) the config refuses
gives one error naming the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.errors import BitmcuError, choices
from ...train import load_data
from ...train.config import (
    FAMILY_KEYS,
    Config,
    _walk,
    apply_overrides,
    config_from_dict,
    load_config,
    override,
    read_yaml,
)

TOP_KEYS = ("base", "validation", "images", "cycle_images", "set", "space", "trials", "pruning",
            "sampler")
RANGE_KEYS = ("low", "high", "step", "log")
SAMPLERS = ("tpe", "nsga2", "random")
SCALAR = (str, int, float, bool, type(None))


def _label(choice: Any) -> Any:
    """The value Optuna stores for a choice: the choice itself, or its JSON text for a list."""
    return choice if isinstance(choice, SCALAR) else json.dumps(choice)


@dataclass
class Param:
    """One searched config key: ``choices``, or a range ``low``..``high`` (``step``, ``log``)."""

    key: str
    choices: list | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high))

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            label = trial.suggest_categorical(self.key, [_label(c) for c in self.choices])
            return self.decode(label)
        if self.integer:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is in this key's space (a listed trial may go outside it)."""
        if self.choices is not None:
            return any(_label(c) == _label(value) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        return self.low <= value <= self.high

    def decode(self, label: Any) -> Any:
        """The config value of a stored parameter value."""
        if self.choices is None:
            return label
        for c in self.choices:
            if _label(c) == label:
                return c
        raise BitmcuError(f"search key '{self.key}': {label!r} is not one of its choices "
                          f"{self.choices}")

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.key}: one of {', '.join(json.dumps(c) for c in self.choices)}"
        extra = (f", step {self.step}" if self.step else "") + (", log scale" if self.log else "")
        return f"{self.key}: {self.low}..{self.high}{extra}"


@dataclass
class Space:
    path: str
    base: str | None
    validation: int
    images: int
    fixed: dict[str, Any]
    params: list[Param]
    trials: list[dict[str, Any]] = field(default_factory=list)
    pruning: dict | None = field(default_factory=lambda: {"warmup": 3, "margin": 0.003})
    sampler: str = "tpe"
    cycle_images: int = 16  # held-out images run on the firmware (over the embedded ones)

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """``--set`` strings for the fixed keys, the data split, then ``values``, less the keys
        that the trial's model family does not read (a space may search families beside their
        own keys: a cnn's channels are not set on an fc trial)."""
        merged = {**self.fixed, "data.validation": self.validation, **values}
        family = merged.get("model.family") or load_config(self.base).model.family
        return [override(k, v) for k, v in merged.items()
                if family in FAMILY_KEYS.get(k, (family,))]

    def config(self, values: dict[str, Any]) -> Config:
        return load_config(self.base, self.overrides(values))

    def enqueued(self, entry: dict[str, Any]) -> tuple[dict, dict]:
        """A ``trials`` entry as (Optuna parameters, other config keys)."""
        by_key = {p.key: p for p in self.params}
        params = {k: _label(v) for k, v in entry.items() if k in by_key and by_key[k].holds(v)}
        rest = {k: v for k, v in entry.items() if k not in params}
        return params, rest

    def text(self) -> str:
        lines = [f"search space {self.path}: base {self.base or '(defaults)'}, "
                 f"{self.validation} held-out training images, cycles the median of "
                 f"{self.cycle_images}"]
        lines += [f"  {p.describe()}" for p in self.params]
        if self.fixed:
            lines.append("  fixed: " + ", ".join(f"{k}={json.dumps(v)}"
                                                 for k, v in self.fixed.items()))
        if self.trials:
            lines.append(f"  {len(self.trials)} listed trials run first")
        return "\n".join(lines)


def space_dir() -> Path:
    """The named search spaces, package data (``bitmcu/spaces``; in a checkout,
    ``benchmarks/spaces`` links to it)."""
    return Path(__file__).resolve().parents[2] / "spaces"


def config_keys() -> set[str]:
    return {k for k, _ in _walk(Config())}


def _err(path: str, key: str, message: str) -> BitmcuError:
    return BitmcuError(f"{path}: search key '{key}': {message}")


def _parse_param(path: str, key: str, spec: Any) -> Param:
    if isinstance(spec, list):
        if not spec:
            raise _err(path, key, "the list of choices is empty; give at least one value")
        labels = [_label(c) for c in spec]
        if len(set(map(json.dumps, labels))) != len(labels):
            raise _err(path, key, f"choices {spec} repeat a value")
        return Param(key, choices=list(spec))
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(RANGE_KEYS))
        if unknown:
            raise _err(path, key, f"unknown range key '{unknown[0]}'; a range has "
                                  f"{choices(RANGE_KEYS)} (or give a list of choices)")
        if "low" not in spec or "high" not in spec:
            raise _err(path, key, "a range needs both low and high")
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        for name, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise _err(path, key, f"{name} {v!r} is not a number")
        if not isinstance(log, bool):
            raise _err(path, key, f"log {log!r} is not true or false")
        if low > high:
            raise _err(path, key, f"low {low} is above high {high}")
        if log and low <= 0:
            raise _err(path, key, f"a log range needs low > 0, not {low}")
        if step is not None and (step <= 0 or log):
            raise _err(path, key, f"step {step}: a step must be > 0 and cannot go with log")
        p = Param(key, low=low, high=high, step=step, log=log)
        if step is not None and not p.integer and isinstance(step, int):
            p.step = float(step)
        return p
    raise _err(path, key, f"{spec!r} is neither a list of choices nor a range "
                          "{low: ..., high: ...}")


def _check_family_keys(space: Space) -> None:
    """A fixed or searched key that no model family of the space reads is refused: it would be
    set, or sampled, and change nothing."""
    family = next((p for p in space.params if p.key == "model.family"), None)
    families = set(family.choices or []) if family else {space.config({}).model.family}
    for key in [*space.fixed, *(p.key for p in space.params)]:
        users = FAMILY_KEYS.get(key)
        if users is not None and not families & set(users):
            raise _err(space.path, key, f"model.family {' or '.join(sorted(families))} does not "
                                        f"use it (it applies to {', '.join(users)}); drop it")


def check_data(space: Space) -> None:
    """Load the data of the space's base config (and of each searched data key's values) once,
    so that a held-out split larger than the training set, a missing file or a bad data set is
    refused before the study starts, not by every trial."""

    values = [{}] + [{p.key: v} for p in space.params if p.key.startswith("data.")
                     for v in (p.choices if p.choices is not None else [p.low, p.high])]
    seen = set()
    for v in values:
        cfg = space.config(v)
        key = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            load_data(cfg)
        except BitmcuError as e:
            where = f" (with {', '.join(f'{k}={json.dumps(x)}' for k, x in v.items())})" if v else ""
            raise BitmcuError(f"search space {space.path}{where}: {e}") from None


def _check_value(space: Space, key: str, value: Any, what: str) -> None:
    try:
        config_from_dict(apply_overrides(_base_dict(space), space.overrides({key: value})))
    except BitmcuError as e:
        raise _err(space.path, key, f"{what} {json.dumps(value)} is refused: {e}") from None


def _base_dict(space: Space) -> dict:
    return dataclasses.asdict(load_config(space.base))


def load_space(path: str | Path) -> Space:
    """Read and check a search space file (see the module docstring)."""
    p = Path(path)
    if not p.exists() and not str(path).endswith((".yaml", ".yml")):
        p = space_dir() / f"{path}.yaml"  # a named space, shipped with bitmcu
    if not p.is_file():
        names = ", ".join(sorted(q.stem for q in space_dir().glob("*.yaml")))
        raise BitmcuError(f"search space {path}: no such file; give a YAML file or one of: "
                          f"{names}")
    data = read_yaml(p, "search space")
    if not isinstance(data, dict):
        raise BitmcuError(f"search space {path}: the top level must be a mapping with "
                          f"{choices(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise BitmcuError(f"search space {path}: unknown key '{unknown[0]}'; allowed: "
                          f"{choices(TOP_KEYS)}")
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        raise BitmcuError(f"search space {path}: base {base!r} is not a config file or name")
    if base is not None and not Path(base).is_absolute() and (p.parent / base).is_file():
        base = str(p.parent / base)  # relative to the space file, where it is there
    try:
        load_config(base)
    except BitmcuError as e:
        raise BitmcuError(f"search space {path}: base: {e}") from None
    counts = {"validation": 5000, "images": 1, "cycle_images": 16}  # the defaults
    counts = {name: data.get(name, default) for name, default in counts.items()}
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BitmcuError(f"search space {path}: {name} {v!r} must be an integer >= 1")
    for name in ("images", "cycle_images"):
        if counts[name] > counts["validation"]:
            raise BitmcuError(f"search space {path}: {name} {counts[name]} is more than the "
                              f"{counts['validation']} held-out images (validation)")
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise BitmcuError(f"search space {path}: sampler {sampler!r} is not allowed; use "
                          f"{choices(SAMPLERS)}")
    pruning = data.get("pruning", {"warmup": 3, "margin": 0.003})
    if pruning is not False:
        if not isinstance(pruning, dict) or set(pruning) - {"warmup", "margin"}:
            raise BitmcuError(f"search space {path}: pruning {pruning!r}: give false or "
                              "{warmup: EPOCHS, margin: ACCURACY}")
        pruning = {"warmup": 3, "margin": 0.003, **pruning}
        if (not isinstance(pruning["warmup"], int) or pruning["warmup"] < 1
                or not isinstance(pruning["margin"], int | float) or pruning["margin"] < 0):
            raise BitmcuError(f"search space {path}: pruning {pruning}: warmup must be an "
                              "integer >= 1 (epochs) and margin a number >= 0 (accuracy, 0..1)")
    keys = config_keys()
    sections = {"fixed": data.get("set") or {}, "space": data.get("space") or {}}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise BitmcuError(f"search space {path}: {'set' if name == 'fixed' else name} must "
                              "be a mapping of config keys")
        for key in section:
            if key not in keys:
                near = sorted(k for k in keys if k.split(".")[-1] == str(key).split(".")[-1])
                hint = f" (did you mean {' or '.join(near)}?)" if near else ""
                raise _err(str(path), key, f"not a config key{hint}; see the keys of "
                                           "`bitmcu train --help` and the README's table")
            if key == "data.validation":
                raise _err(str(path), key, "the held-out split is the space's own "
                                           "'validation' key, not a config key to set")
    both = sorted(set(sections["fixed"]) & set(sections["space"]))
    if both:
        raise _err(str(path), both[0], "is both fixed (set) and searched (space)")
    params = [_parse_param(str(path), k, v) for k, v in sections["space"].items()]
    trials = data.get("trials") or []
    if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        raise BitmcuError(f"search space {path}: trials must be a list of mappings of config "
                          "keys to values")
    if not params and not trials:
        raise BitmcuError(f"search space {path}: nothing to search: give at least one config "
                          "key under space (choices or a range), or list trials")
    space = Space(str(path), base, counts["validation"], counts["images"],
                  dict(sections["fixed"]), params, trials, pruning or None, sampler,
                  counts["cycle_images"])
    try:
        space.config({})
    except BitmcuError as e:
        raise BitmcuError(f"search space {path}: the base config with its fixed keys is "
                          f"refused: {e}") from None
    _check_family_keys(space)
    for prm in params:
        values = prm.choices if prm.choices is not None else [prm.low, prm.high]
        what = "choice" if prm.choices is not None else "range end"
        for v in values:
            _check_value(space, prm.key, v, what)
    for i, entry in enumerate(trials):
        for key in entry:
            if key not in keys:
                raise _err(str(path), key, f"(trials[{i}]) not a config key")
        try:
            space.config(entry)
        except BitmcuError as e:
            raise BitmcuError(f"search space {path}: trials[{i}] is refused: {e}") from None
    return space
