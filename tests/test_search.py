"""bitmcu search: space checks, a tiny study with two workers, pruning before and during
training, a killed worker, PostgreSQL storage, --report and --best."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from bitmcu.apps.search import load_space
from bitmcu.apps.search.study import open_study, pareto
from bitmcu.cli import main
from bitmcu.core.errors import BitmcuError
from tests.conftest import SUBSET

needs_gcc = pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                               reason="RISC-V cross compiler not installed")

FIXED = {"data.dataset": str(SUBSET), "train.epochs": 3, "train.batch_size": 32,
         "augment.fraction": 0.3}
METRICS = ("val_acc", "val_acc_float", "cycles", "cycles_untrained", "flash", "ram",
           "stack_peak", "weight_bytes", "train_seconds", "seconds", "run_dir", "epochs")


def space_file(tmp_path, name="tiny", **top) -> str:
    data = {"base": None, "validation": 400, "set": dict(FIXED),
            "space": {"model.hidden": [[16], [24]],
                      "train.lr": {"low": 0.001, "high": 0.004, "log": True}},
            "pruning": False, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def search(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bitmcu.cli", "search", *args,
                           "--root", str(tmp_path / "runs")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------------- bad spaces


@pytest.mark.parametrize("space, key, words", [
    ({"model.hiden": [[16]]}, "model.hiden", "not a config key"),
    ({"model.scheme": []}, "model.scheme", "empty"),
    ({"train.lr": {"low": 0.01, "high": 0.001}}, "train.lr", "above high"),
    ({"model.scheme": ["4bitsym", "5bit"]}, "model.scheme", "5bit"),
    ({"train.lr": {"low": 0, "high": 0.01}}, "train.lr", "must be > 0"),
    ({"model.hidden": {"low": 1}}, "model.hidden", "needs both low and high"),
    ({"train.epochs": {"low": 1, "high": 5, "stride": 2}}, "train.epochs", "stride"),
    ({"data.validation": [100, 200]}, "data.validation", "'validation' key"),
])
def test_bad_space_names_the_key(tmp_path, space, key, words):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": None, "space": space}))
    with pytest.raises(BitmcuError) as e:
        load_space(path)
    assert f"'{key}'" in str(e.value) and words in str(e.value), str(e.value)


def test_bad_space_top_level_and_listed_trial(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": None, "spaces": {}}))
    with pytest.raises(BitmcuError, match="unknown key 'spaces'"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": None, "trials": [{"model.scheme": "3bit"}]}))
    with pytest.raises(BitmcuError, match=r"trials\[0\] is refused.*3bit"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": None, "validation": 100, "cycle_images": 101}))
    with pytest.raises(BitmcuError, match="cycle_images 101 is more than the 100 held-out"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": "no-such-config"}))
    with pytest.raises(BitmcuError, match="base: config 'no-such-config' not found"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": None, "set": {"train.lr": 0.01},
                                    "space": {"train.lr": [0.01, 0.02]}}))
    assert main(["search", str(path), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'train.lr'" in err[0] and "both fixed" in err[0]
    assert not (tmp_path / "bad.db").exists()  # nothing made for a refused space


def test_space_with_nothing_to_search_or_a_key_its_family_does_not_use(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": None, "space": {}}))
    with pytest.raises(BitmcuError, match="nothing to search: give at least one config key"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": "reference", "space": {
        "model.channels": {"low": 16, "high": 64, "step": 8}, "train.lr": [0.001, 0.002]}}))
    with pytest.raises(BitmcuError, match=r"'model.channels': model.family fc does not use it "
                                          r"\(it applies to cnn, convnet, decoder\)"):
        load_space(path)
    path.write_text(yaml.safe_dump({"base": None, "set": {"model.latent": 8},
                                    "space": {"train.lr": [0.001, 0.002]}}))
    with pytest.raises(BitmcuError, match=r"'model.latent': model.family fc does not use it"):
        load_space(path)
    # a family searched beside its own keys, and a space of listed trials only, are searches
    path.write_text(yaml.safe_dump({"base": None, "space": {"model.family": ["fc", "cnn"],
                                                            "model.channels": [8, 16]}}))
    sp = load_space(path)
    assert {p.key for p in sp.params} == {"model.family", "model.channels"}
    # an fc trial leaves the cnn's channels out of its config (it refuses keys it does not read)
    assert sp.config({"model.family": "fc", "model.channels": 8}).model.family == "fc"
    assert sp.config({"model.family": "cnn", "model.channels": 8}).model.channels == 8
    path.write_text(yaml.safe_dump({"base": None, "trials": [{"train.lr": 0.001}]}))
    assert load_space(path).trials == [{"train.lr": 0.001}]
    # a character model's sampler reads model.temperature as a decoder's does
    path.write_text(yaml.safe_dump({"base": "charrnn-surnames",
                                    "space": {"model.temperature": [0.8, 1.0]}}))
    assert [p.key for p in load_space(path).params] == ["model.temperature"]


def test_search_refuses_before_the_study_starts(tmp_path, capsys):
    """--set without --best, and a held-out split as large as the training set: one line
    each, and no study made."""
    path = space_file(tmp_path)
    assert main(["search", path, "--set", "train.epochs=1", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set train.epochs=1: --set changes the trial --best" in err[0]
    path = space_file(tmp_path, "big", validation=2000)
    assert main(["search", path, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.validation 2000: the training set has only 2000" in err[0]
    assert not list(tmp_path.glob("*.db"))


def test_budget_before_training_prunes_beyond_the_slack_only():
    from bitmcu.apps.search.trial import CYCLES_SLACK, Budget

    b = Budget("ch32v003", max_flash=10000, max_cycles=100000)  # below the chip's 16,384
    fits = {"flash": 10000, "ram": 2048, "cycles": int(CYCLES_SLACK * 100000)}
    assert b.before_training(fits) is None  # an untrained estimate within the slack: trained
    why = b.before_training({**fits, "cycles": int(CYCLES_SLACK * 100000) + 1})
    assert why.startswith("over the budget: cycles 130,001 > 100,000") and "1.3x" in why
    assert b.before_training({**fits, "flash": 10001, "cycles": 1}) == \
        "over the budget: flash 10,001 > 10,000"
    chip = Budget("ch32v002")
    assert (chip.max_flash, chip.max_ram, chip.max_cycles) == (16384, 4096, None)
    assert chip.before_training({"flash": 16384, "ram": 4096, "cycles": 10**9}) is None
    assert "RAM 4,097 > 4,096" in chip.before_training({"flash": 1, "ram": 4097, "cycles": 1})


def _hand_made_study(trials: list[dict], budget: dict | None = None):
    """An in-memory study of complete trials with the given user attrs (values from them)."""
    import optuna

    from bitmcu.apps.search.study import DIRECTIONS, _quiet_optuna

    _quiet_optuna()
    study = optuna.create_study(directions=DIRECTIONS)
    study.set_user_attr("budget", budget or {"mcu": "ch32v003", "max_flash": 16384,
                                             "max_ram": 2048, "max_cycles": None})
    for a in trials:
        study.add_trial(optuna.trial.create_trial(
            values=[a["val_acc"], a["cycles"]], user_attrs={"flash": 9000, "ram": 1500, **a}))
    return study


def test_pareto_front_keeps_the_accurate_and_the_fast():
    study = _hand_made_study([
        {"val_acc": 0.90, "cycles": 100},   # 0: the fastest
        {"val_acc": 0.95, "cycles": 200},   # 1: on the front
        {"val_acc": 0.94, "cycles": 300},   # 2: beaten by 1 (less accurate and slower)
        {"val_acc": 0.97, "cycles": 400},   # 3: the most accurate
        {"val_acc": 0.99, "cycles": 50, "flash": 20000},  # 4: over the flash: not a candidate
        {"val_acc": 0.95, "cycles": 250},   # 5: as accurate as 1, slower: beaten
    ])
    assert [t.number for t in pareto(study)] == [0, 1, 3]  # fastest first
    assert [t.number for t in pareto(study, max_cycles=250)] == [0, 1]


def test_pruning_during_training_keeps_a_trial_within_the_margin():
    from types import SimpleNamespace

    from bitmcu.apps.search.space import Space
    from bitmcu.apps.search.trial import Budget, Objective

    study = _hand_made_study([{"val_acc": 0.9, "cycles": 1000, "cycles_untrained": 1000,
                               "curve": [0.50, 0.60, 0.70, 0.80]}])
    space = Space("s.yaml", None, 100, 1, {}, [], pruning={"warmup": 2, "margin": 0.05})
    obj = Objective(space, Budget("ch32v003"), Path("."), None, log=lambda m: None)
    trial = SimpleNamespace(study=study)
    # at epoch 2 of 4 the finished trial had 0.60: 0.551 is within the margin, 0.549 is not
    assert obj._dominated(trial, 2, 4, 0.551, cycles=1000) is None
    assert obj._dominated(trial, 2, 4, 0.549, cycles=1000).number == 0
    assert obj._dominated(trial, 1, 4, 0.10, cycles=1000) is None  # before the warm-up
    assert obj._dominated(trial, 4, 4, 0.10, cycles=1000) is None  # the last epoch: finished
    assert obj._dominated(trial, 2, 4, 0.10, cycles=999) is None  # the rival is slower
    # a trial of twice the epochs is compared at the same share of its training
    assert obj._dominated(trial, 4, 8, 0.549, cycles=1000).number == 0


def test_missing_study_and_bad_storage(tmp_path, capsys):
    assert main(["search", "--report", "nope", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "does not exist" in err
    assert not (tmp_path / "nope.db").exists()  # not made by looking for it
    path = space_file(tmp_path)
    assert main(["search", path, "--storage", "mysql://nobody@nowhere/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--storage mysql://nobody@nowhere/x: cannot open it" in err[0]


def test_validation_split_is_the_training_sets_tail():
    import numpy as np

    from bitmcu.data.datasets import load_dataset

    full = load_dataset(str(SUBSET))
    held = load_dataset(str(SUBSET), validation=400, train_limit=1000)
    assert held.split == "val" and full.split == "test"
    assert len(held.train_x) == 1000 and len(held.test_x) == 400
    assert np.array_equal(held.test_orig.numpy(), full.train_orig[-400:].numpy())
    assert np.array_equal(held.train_y.numpy(), full.train_y[:1000].numpy())
    with pytest.raises(BitmcuError, match="data.validation 2000: the training set has only 2000"):
        load_dataset(str(SUBSET), validation=2000)


def test_space_values_and_listed_trials(tmp_path):
    sp = load_space(space_file(tmp_path, trials=[{"model.hidden": [24], "seed": 3},
                                                 {"model.hidden": [600, 300]}]))
    hidden = sp.params[0]
    assert hidden.choices == [[16], [24]] and hidden.decode("[24]") == [24]
    assert sp.enqueued(sp.trials[0]) == ({"model.hidden": "[24]"}, {"seed": 3})
    # a listed value outside the space is set, not suggested
    assert sp.enqueued(sp.trials[1]) == ({}, {"model.hidden": [600, 300]})
    cfg = sp.config({"model.hidden": [24]})
    assert cfg.data.validation == 400 and cfg.model.hidden == [24] and cfg.train.epochs == 3


# ------------------------------------------------------------------------- studies


@needs_gcc
def test_tiny_study_two_workers(tmp_path):
    """Two worker processes share an SQLite study; a listed candidate too big for the chip is
    pruned before any training; every other trial completes with all its figures."""
    path = space_file(tmp_path, trials=[{"model.hidden": [600, 300]}])
    r = search(tmp_path, path, "--trials", "5", "--workers", "2", "--mcu", "ch32v003")
    assert r.returncode == 0, r.stderr[-3000:]
    study = open_study("tiny", f"sqlite:///{tmp_path / 'runs' / 'tiny.db'}")
    trials = study.get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE"] * 4 + ["PRUNED"], [
        (t.number, t.state.name, t.user_attrs.get("error"), t.user_attrs.get("reason"))
        for t in trials]
    big = next(t for t in trials if t.state.name == "PRUNED")
    assert big.user_attrs["config"]["model.hidden"] == [600, 300]
    assert "flash overflowed" in big.user_attrs["reason"]
    assert big.user_attrs["flash"] > 16384 and "train_seconds" not in big.user_attrs
    assert not (tmp_path / "runs" / "tiny" / f"trial-{big.number:04d}" / "run").exists()
    pids = set()
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        missing = [k for k in METRICS if k not in t.user_attrs]
        assert not missing, (t.number, missing)
        a = t.user_attrs
        assert t.values == [a["val_acc"], a["cycles"]]
        assert 0.3 < a["val_acc"] <= 1 and a["flash"] <= 16384 and a["ram"] <= 2048
        assert (tmp_path / "runs" / "tiny" / f"trial-{t.number:04d}" / "run" /
                "checkpoint.pt").is_file()
        metrics = (tmp_path / "runs" / "tiny" / f"trial-{t.number:04d}" / "run" /
                   "metrics.jsonl").read_text()
        assert "val_acc" in metrics and "test_acc" not in metrics  # never the test set
        pids.add(a["pid"])
    assert len(pids) == 2  # both workers ran trials
    # the report: the Pareto front, its test accuracy measured once, table, plot, JSON
    front = pareto(study)
    assert front and all(str(t.number) in study.user_attrs["test"] for t in front)
    rep = tmp_path / "runs" / "tiny" / "report"
    assert (rep / "pareto.png").stat().st_size > 1000
    rows = json.loads((rep / "trials.json").read_text())
    assert sum(r["pareto"] for r in rows) == len(front)
    assert "Pareto front" in r.stdout and "firmware does not fit" in r.stdout
    for t in trials:  # a line per epoch of every trained trial: progress while it trains
        if t.state.name == "COMPLETE":
            assert all(f"trial {t.number}: epoch {e}/3, validation " in r.stdout
                       for e in (1, 2, 3)), r.stdout

    r2 = search(tmp_path, "--report", "tiny")
    assert r2.returncode == 0 and f"{big.number:>4}x pruned" in r2.stdout, r2.stdout

    # the same study with another budget is refused, naming both
    r3 = search(tmp_path, path, "--trials", "6", "--mcu", "ch32v002")
    assert r3.returncode == 2 and "ch32v003" in r3.stderr and "another --study" in r3.stderr

    # --best retrains the chosen trial on the whole training set and exports it
    r4 = search(tmp_path, "--best", "tiny", "--seeds", "0,1")
    assert r4.returncode == 0, r4.stderr[-3000:]
    best = json.loads((tmp_path / "runs" / "tiny" / "best" / "best.json").read_text())
    chosen = max(front, key=lambda t: t.user_attrs["val_acc"])
    assert best["trial"] == chosen.number and [s["seed"] for s in best["seeds"]] == [0, 1]
    assert all(0.3 < s["test_acc"] <= 1 and s["cycles"] > 0 for s in best["seeds"])
    assert "median test accuracy" in r4.stdout
    # a finished seed is not trained or measured again when --best is run once more
    seed0 = tmp_path / "runs" / "tiny" / "best" / "seed0"
    stamps = {p: p.stat().st_mtime_ns for p in (seed0 / "checkpoint.pt", seed0 / "result.json")}
    r5 = search(tmp_path, "--best", "tiny", "--seeds", "0,1")
    assert r5.returncode == 0, r5.stderr[-3000:]
    again = json.loads((tmp_path / "runs" / "tiny" / "best" / "best.json").read_text())
    assert again["seeds"] == best["seeds"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # other --set values are not resumed from a run of the old config
    r6 = search(tmp_path, "--best", "tiny", "--seeds", "0", "--set", "train.epochs=4")
    assert r6.returncode == 2 and "holds a run of another config (train.epochs 3, not 4)" \
        in r6.stderr, r6.stderr[-2000:]


@needs_gcc
def test_pruned_during_training(tmp_path):
    """A trial far behind a finished one as fast, at the same epoch, is stopped there."""
    path = space_file(tmp_path, "prune", pruning={"warmup": 1, "margin": 0.05},
                      trials=[{"model.hidden": [24], "train.lr": 0.004},
                              {"model.hidden": [24], "train.lr": 1e-6}])
    r = search(tmp_path, path, "--trials", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    study = open_study("prune", f"sqlite:///{tmp_path / 'runs' / 'prune.db'}")
    good, slow = study.get_trials()
    assert good.state.name == "COMPLETE" and slow.state.name == "PRUNED"
    assert len(slow.user_attrs["curve"]) == 1 and "below trial 0" in slow.user_attrs["reason"]


@needs_gcc
def test_killed_worker_study_goes_on(tmp_path):
    """A worker killed mid-trial (preparing or training it): its trial is failed by the heartbeat
    and run again by the other worker, which finishes the study."""
    path = space_file(tmp_path, "kill", set={**FIXED, "train.epochs": 12})
    url = f"sqlite:///{tmp_path / 'runs' / 'kill.db'}"
    cmd = [sys.executable, "-m", "bitmcu.cli", "search", path, "--trials", "3", "--heartbeat",
           "1", "--root", str(tmp_path / "runs"), "--quiet", "--threads", "1"]
    log = (tmp_path / "victim.log").open("w")  # what it said, should it end unseen
    victim = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    target = study = None
    while target is None and victim.poll() is None:  # the event, however long a busy machine takes
        time.sleep(0.1)
        if study is None:  # opened once: opening it at every look took seconds on a busy
            try:  # machine, long enough to miss the victim's trials (it ended unseen)
                study = open_study("kill", url)
            except BitmcuError:
                continue
        # any moment of a trial of its (preflight or training): a window of seconds, where
        # its training alone (12 short epochs) was once missed on a busy machine
        target = next((t for t in study.get_trials() if t.state.name == "RUNNING"
                       and t.user_attrs.get("pid") == victim.pid), None)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    log.close()
    assert target is not None, ("the first worker ended before it was seen in a trial: "
                                + (tmp_path / "victim.log").read_text()[-3000:])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = open_study("kill", url).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[target.number].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == target.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == target.params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@needs_gcc
def test_ctrl_c_is_one_line(tmp_path):
    """Ctrl-C reaches every process of the terminal's group: two workers and the parent end
    with one line from bitmcu and no traceback."""
    path = space_file(tmp_path, "intr", set={**FIXED, "train.epochs": 50})
    proc = subprocess.Popen([sys.executable, "-m", "bitmcu.cli", "search", path, "--trials", "4",
                             "--workers", "2", "--threads", "1", "--root", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # SIGINT as from a terminal, even where
                            preexec_fn=_default_sigint)  # this suite runs with it ignored (&)
    seen = set()
    for line in proc.stdout:  # wait for both workers to be training
        if ": epoch 1/50" in line:
            seen.add(line.split("]")[0])
        if len(seen) == 2:
            break
    assert len(seen) == 2, "the workers ended before both were seen training"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + out, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitmcu: interrupted; the study keeps"), err


@needs_gcc
@pytest.mark.skipif(not os.environ.get("BITMCU_TEST_POSTGRES"),
                    reason="no PostgreSQL server (scripts/postgres.sh starts one; .ci/run does)")
def test_postgres_two_workers(tmp_path):
    """Two workers, as on two machines, join one study on a PostgreSQL server."""
    import optuna

    url = os.environ["BITMCU_TEST_POSTGRES"]
    name = f"pg-{os.getpid()}-{int(time.time())}"
    path = space_file(tmp_path, "pg")
    cmd = [sys.executable, "-m", "bitmcu.cli", "search", path, "--trials", "4", "--storage", url,
           "--study", name, "--root", str(tmp_path / "runs"), "--quiet", "--threads", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        trials = open_study(name, url).get_trials()
        assert sum(t.state.name == "COMPLETE" for t in trials) >= 4
        assert len({t.user_attrs["pid"] for t in trials}) == 2
    finally:
        optuna.delete_study(study_name=name, storage=url)


def open_together(url: str, tmp_path: Path, workers: int = 6) -> None:
    """``workers`` processes open the storage ``url`` at the same moment (each waits, imported,
    for a go file made once all are ready); every one of them must open it."""
    go = tmp_path / "go"
    code = ("import pathlib, sys, time\n"
            "from bitmcu.apps.search.study import storage\n"
            f"pathlib.Path({str(tmp_path)!r}, 'ready' + sys.argv[1]).touch()\n"
            f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.001)\n"
            f"storage({url!r})\n"
            "print('opened')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(workers)]
    while (len(list(tmp_path.glob("ready*"))) < workers
           and all(p.poll() is None for p in procs)):
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(o[0].strip() == "opened" for o in outs), [o[1][-1500:] for o in outs]


def test_workers_starting_together_on_a_new_sqlite_file(tmp_path):
    """Workers that start at the same moment on a new SQLite file race to make Optuna's tables
    and its schema's version row; every one of them opens the storage. (One lost the race in
    CI: a search worker died with "UNIQUE constraint failed: alembic_version.version_num".)"""
    open_together(f"sqlite:///{tmp_path / 'race.db'}", tmp_path)


@pytest.mark.skipif(not os.environ.get("BITMCU_TEST_POSTGRES"),
                    reason="no PostgreSQL server (scripts/postgres.sh starts one; .ci/run does)")
def test_workers_starting_together_on_an_empty_database(tmp_path):
    """Workers that start at the same moment on a new PostgreSQL database race to make
    Optuna's tables; every one of them opens the storage."""
    import psycopg

    url = os.environ["BITMCU_TEST_POSTGRES"]
    db = f"bitmcu_race_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create database {db}")
    try:
        open_together(url.rsplit("/", 1)[0] + "/" + db, tmp_path)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {db}")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs "
                    "Debian's chromium)")
def test_dashboard_lists_the_trials(tmp_path):
    """optuna-dashboard on a search's storage, as the README says to run it: its trials page,
    rendered by headless Chromium, lists the study's trials."""
    import socket

    import optuna

    from bitmcu.apps.search.trial import Budget

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    sp = load_space(space_file(tmp_path, "dash"))
    study = open_study("dash", url, sp, Budget("ch32v003"), create=True)
    for i in range(3):
        study.add_trial(optuna.create_trial(values=[0.9 + i / 100, 1000 * (i + 1)],
                                            user_attrs={"val_acc": 0.9 + i / 100}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("optuna-dashboard")  # the venv's console script
    dash = subprocess.Popen([str(exe), url, "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}/trials"
        dom = ""
        for _ in range(20):  # the server needs a moment to start
            time.sleep(0.5)
            r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                "--virtual-time-budget=8000", "--dump-dom", page],
                               capture_output=True, text=True, timeout=120)
            dom = r.stdout
            if "Trial 2" in dom:
                break
        assert all(f"Trial {i}" in dom for i in range(3)), dom[-2000:]
    finally:
        dash.terminate()
        dash.wait()


def _pop_all(url: str, out) -> None:
    from bitmcu.apps.search.study import storage

    study = optuna.load_study(study_name="race", storage=storage(url))
    got = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        got.append(trial_id)
    out.put(got)


def test_an_enqueued_trial_is_popped_by_one_sqlite_worker_only(tmp_path):
    """Six processes pop 40 enqueued trials from one SQLite study at once: each trial once (a
    read before the write lock let two workers run the same trial; 47 pops of 40 without it)."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=url)
    for i in range(40):
        study.enqueue_trial({"x": i})
    out = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_pop_all, args=(url, out))
             for _ in range(6)]
    for p in procs:
        p.start()
    got = sum((out.get(timeout=300) for _ in procs), [])
    for p in procs:
        p.join()
    assert sorted(got) == sorted(t._trial_id for t in study.get_trials())
