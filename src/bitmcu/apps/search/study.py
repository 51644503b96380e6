"""Budget search studies on Optuna: storage, workers, the Pareto front, its test accuracy, the
report and plot, and the retraining of the chosen trial.

A study lives in an Optuna storage: an SQLite file by default (one machine, several worker
processes) or a PostgreSQL URL (workers on many machines join the same study). Workers send a
heartbeat; the trial of a worker that died is marked failed and run again by another worker.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import statistics
import time
from pathlib import Path

from ...core.errors import BitmcuError
from ...deploy import reference
from ...deploy.export import export_test_images
from ...target.emulator import measure_export
from ...train import evaluate, load_checkpoint, load_data, model_from_checkpoint, train
from ...train.config import differences, load_config, override
from ...train.lower import lower
from ..pipeline import export
from .space import Space, load_space
from .trial import Budget, Objective

DIRECTIONS = ["maximize", "minimize"]  # validation accuracy, cycles per inference
HEARTBEAT = 60  # seconds between a worker's heartbeats; a trial silent for 2x is failed


def _quiet_optuna() -> None:
    """Optuna's warnings about its experimental heartbeat API, its INFO lines and its warning
    with a traceback for each failed (or interrupted) trial off: the search prints its own
    line per trial, with the error kept in the trial's user attrs."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def default_storage(root: Path, study: str) -> str:
    return f"sqlite:///{(root / f'{study}.db').absolute()}"


def storage(url: str, heartbeat: int = HEARTBEAT):
    """An Optuna RDB storage with heartbeats (dead workers' trials failed and retried)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    _quiet_optuna()
    kwargs = {}
    if url.startswith("sqlite:"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                st = RDBStorage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                    max_retry=2), **kwargs)
                if url.startswith("sqlite:"):
                    _begin_immediate(st.engine)
                return st
            except Exception as e:  # workers that start together on an empty database race to
                if attempt == SCHEMA_RACE_RETRIES or not _schema_race(e):  # make its tables:
                    raise  # the losers find them made a moment later
                time.sleep(0.2 + random.random())
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as e:
        raise BitmcuError(f"--storage {url}: cannot open it ({str(e).splitlines()[0]}); give an "
                          "SQLite file (sqlite:///PATH.db) or a PostgreSQL URL "
                          "(postgresql://USER:PASSWORD@HOST/DATABASE)") from None
    except Exception as e:  # sqlalchemy's errors: a server that is down, a bad password
        raise BitmcuError(f"--storage {url}: cannot open it ({str(e).splitlines()[0]})") from None


SCHEMA_RACE_RETRIES = 5


def _begin_immediate(engine) -> None:
    """SQLite ignores SELECT ... FOR UPDATE, and pysqlite begins a transaction only at its first
    write: two workers could both read an enqueued trial as WAITING and both run it (optuna
    issue 4621; it failed test_tiny_study_two_workers now and then). Every transaction of this
    engine begins IMMEDIATE instead, taking the database's write lock before it reads, so a
    trial is popped by one worker only. (SQLAlchemy's recipe for pysqlite transactions.)"""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # the begin event below issues BEGIN itself

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners are closed


def _schema_race(e: Exception) -> bool:
    """Whether ``e`` is the database refusing a table (PostgreSQL: or its row type; SQLite: or
    the schema's version row) that another worker created at the same moment."""
    import sqlalchemy.exc

    text = str(e)
    return isinstance(e, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError
                      | sqlalchemy.exc.OperationalError) and (
        "already exists" in text or "pg_type_typname_nsp_index" in text
        or "UNIQUE constraint failed: alembic_version" in text)


def make_sampler(space: Space, seed: int | None = None):
    """The space's sampler; trials set their budget constraints themselves (Trial.set_constraint)."""
    import optuna

    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def open_study(name: str, url: str, space: Space | None = None, budget: Budget | None = None,
               heartbeat: int = HEARTBEAT, create: bool = False):
    """The study ``name``; with ``create``, made if new (its space and budget stored in it) and
    checked to have the same space and budget if it exists."""
    import optuna

    if url.startswith("sqlite:///") and not create and not Path(url[10:]).is_file():
        raise BitmcuError(f"no study {name!r}: {url[10:]} does not exist (give the --storage "
                          "and --root the search ran with)")
    st = storage(url, heartbeat)
    names = [s.study_name for s in optuna.get_all_study_summaries(st)]
    if name not in names and not create:
        raise BitmcuError(f"no study {name!r} in {url}" + (f"; it holds: {', '.join(names)}"
                                                         if names else " (it holds none)"))
    sampler = make_sampler(space) if space is not None else None
    if name in names:
        study = optuna.load_study(study_name=name, storage=st, sampler=sampler)
        if create:
            _check_same(study, space, budget)
        return study
    try:
        study = optuna.create_study(study_name=name, storage=st, directions=DIRECTIONS,
                                    sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:  # another worker made it a moment ago:
        return optuna.load_study(study_name=name, storage=st, sampler=sampler)  # it enqueues
    study.set_user_attr("space", space.path)
    study.set_user_attr("space_text", space.text())
    study.set_user_attr("budget", budget.to_dict())
    study.set_user_attr("base", space.base)
    study.set_user_attr("fixed", space.fixed)
    study.set_user_attr("cycle_images", space.cycle_images)
    for entry in space.trials:
        params, rest = space.enqueued(entry)
        study.enqueue_trial(params, user_attrs={"set": rest} if rest else None)
    return study


def _check_same(study, space: Space, budget: Budget) -> None:
    had = study.user_attrs.get("budget")
    if had is not None and had != budget.to_dict():
        raise BitmcuError(f"study {study.study_name!r} searches for {json.dumps(had)}, not "
                          f"{json.dumps(budget.to_dict())}; give the same --mcu and limits, or "
                          "start another --study")
    text = study.user_attrs.get("space_text")
    if text is not None and text.split("\n", 1)[1:] != space.text().split("\n", 1)[1:]:
        raise BitmcuError(f"study {study.study_name!r} was started with another search space "
                          f"({study.user_attrs.get('space')}); give the same space file, or "
                          "start another --study")


def budget_of(study) -> Budget:
    return Budget(**study.user_attrs["budget"])


def _counted(study) -> int:
    """Trials that count towards --trials: finished or running, failed ones not run again."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    trials = study.get_trials(deepcopy=False)
    retried = {Retry.retried_trial_number(t) for t in trials}
    S = optuna.trial.TrialState
    return sum(1 for t in trials if t.state != S.WAITING
               and not (t.state == S.FAIL and t.number in retried))


def work(space_path: str, name: str, url: str, n_trials: int, timeout: float | None,
         root: str, threads: int | None, heartbeat: int = HEARTBEAT, quiet: bool = False) -> None:
    """One worker: run trials until the study has ``n_trials`` or ``timeout`` seconds passed."""

    space = load_space(space_path)
    study = open_study(name, url, heartbeat=heartbeat)
    budget = budget_of(study)
    study.sampler = make_sampler(space)
    tag = f"[{os.getpid()}]"

    def log(msg):
        if not quiet:
            print(f"{tag} {msg}", flush=True)

    objective = Objective(space, budget, Path(root), threads, log)
    t0 = time.monotonic()
    while _counted(study) < n_trials and (timeout is None or time.monotonic() - t0 < timeout):
        study.optimize(objective, n_trials=1, catch=(Exception,))


def _worker(*args) -> None:
    """A worker process: Ctrl-C (which reaches every process of the terminal's group) ends it
    without a traceback; the parent prints the one line about it. An error raised while the
    interrupt unwinds (Optuna then records the trial's end; with SQLite the other worker may
    hold the lock: 'database is locked', and Optuna's handler fails in turn) is part of it."""
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        work(*args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception:
        if interrupted:
            raise SystemExit(130) from None
        raise


def run_workers(space_path: str, name: str, url: str, n_trials: int, timeout: float | None,
                root: str, workers: int, threads: int | None, heartbeat: int = HEARTBEAT,
                quiet: bool = False) -> None:
    """``workers`` worker processes on this machine (one: this process)."""
    args = (space_path, name, url, n_trials, timeout, root, threads, heartbeat, quiet)
    if workers == 1:
        work(*args)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=args, daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        print(f"bitmcu search: {len(bad)} of {workers} workers ended with exit code "
              f"{bad[0]}; the study keeps their finished trials", flush=True)


# --------------------------------------------------------------------------- the front


def finished(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def pareto(study, max_cycles: int | None = None) -> list:
    """Complete trials within the budget (and ``max_cycles``) that no other such trial beats on
    both validation accuracy and cycles, fastest first."""
    budget = budget_of(study)
    ok = [t for t in finished(study) if budget.fits(t.user_attrs)
          and (max_cycles is None or t.user_attrs["cycles"] <= max_cycles)]

    def beats(a, b):
        va, ca = a.user_attrs["val_acc"], a.user_attrs["cycles"]
        vb, cb = b.user_attrs["val_acc"], b.user_attrs["cycles"]
        return va >= vb and ca <= cb and (va > vb or ca < cb)

    front = [t for t in ok if not any(beats(o, t) for o in ok)]
    return sorted(front, key=lambda t: (t.user_attrs["cycles"], -t.user_attrs["val_acc"]))


def test_accuracy(run_dir: Path, data_dir: str | None = None) -> dict:
    """Float and integer accuracy of a trial's run on the test set."""

    blob = load_checkpoint(run_dir)
    cfg = blob["cfg"]
    cfg.data.validation = 0  # the test set, seen here for the first time
    if data_dir:
        cfg.data.data_dir = data_dir
    data = load_data(cfg)
    model = lower(blob)
    _, pred = reference.run(model, data.test_x.numpy())
    return {"test_acc": float((pred == data.test_y.numpy()).mean()),
            "test_acc_float": evaluate(model_from_checkpoint(blob), data.test_x, data.test_y).acc}


def running(study) -> int:
    import optuna

    S = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(S.RUNNING, S.WAITING)))


def measure_front(study, log=print) -> None:
    """Test accuracy of each Pareto-front trial, measured once and kept in the study, when no
    trial runs or waits any more (the front is final). Trials whose run is on another machine
    are left to that machine's `bitmcu search --report`."""
    import optuna

    optuna.storages.fail_stale_trials(study)  # a dead worker's trial is not running
    if running(study):
        log(f"study {study.study_name}: {running(study)} trial(s) running or waiting; the "
            "front's test accuracy is measured once they have finished")
        return
    for t in pareto(study):
        if str(t.number) in study.user_attrs.get("test", {}):
            continue
        run = Path(t.user_attrs["run_dir"]) / "run"
        if not (run / "checkpoint.pt").is_file():
            log(f"trial {t.number}: its run is on {t.user_attrs.get('host')}, not here; its test "
                "accuracy is measured there")
            continue
        tests = dict(study.user_attrs.get("test", {}))
        tests[str(t.number)] = test_accuracy(run)
        study.set_user_attr("test", tests)


def rows(study) -> list[dict]:
    budget = budget_of(study)
    front = {t.number for t in pareto(study)}
    tests = study.user_attrs.get("test", {})
    out = []
    for t in study.get_trials(deepcopy=False):
        a = {**t.user_attrs, **tests.get(str(t.number), {})}
        out.append({"trial": t.number, "state": t.state.name.lower(),
                    "fits": budget.fits(a) if "flash" in a else None,
                    "pareto": t.number in front, "config": a.get("config", {}),
                    **{k: a.get(k) for k in ("val_acc", "val_acc_float", "test_acc", "cycles",
                                             "cycles_untrained", "flash", "ram", "stack_peak",
                                             "weight_bytes", "train_seconds", "seconds",
                                             "epochs", "run_dir", "host", "reason", "error")}})
    return out


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _num(v):
    return "-" if v is None else f"{v:,}"


def report_text(study, rs: list[dict] | None = None) -> str:
    """The study's table; ``rs``: its `rows`, when the caller has them already."""
    b = budget_of(study)
    rs = rows(study) if rs is None else rs
    counts = {}
    for r in rs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines = [f"study {study.study_name}: {b.mcu}, flash <= {b.max_flash:,} B, RAM <= "
             f"{b.max_ram:,} B" + ("" if b.max_cycles is None else
                                   f", <= {b.max_cycles:,} cycles") + "; "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
             study.user_attrs.get("space_text", ""), "",
             f"{'trial':>5} {'state':<9}{'val %':>7}{'test %':>7}{'cycles':>12}{'flash':>9}"
             f"{'RAM':>8}{'stack':>6}{'weights':>9}{'train s':>8}  config"]
    for r in rs:
        mark = "*" if r["pareto"] else ("x" if r["fits"] is False else " ")
        cfg = " ".join(f"{k}={json.dumps(v)}" for k, v in r["config"].items())
        why = r["reason"] or r["error"]
        note = f"  ({why.strip().splitlines()[-1][:100]})" if why and r["state"] != "complete" \
            else ""
        cycles = _num(r["cycles"]) if r["state"] == "complete" or r["cycles"] is None \
            else "~" + _num(r["cycles"])  # the untrained model's, before training
        lines.append(f"{r['trial']:>4}{mark} {r['state']:<9}{_pct(r['val_acc']):>7}"
                     f"{_pct(r['test_acc']):>7}{cycles:>12}{_num(r['flash']):>9}"
                     f"{_num(r['ram']):>8}{_num(r['stack_peak']):>6}{_num(r['weight_bytes']):>9}"
                     f"{_num(r['train_seconds']):>8}  {cfg}{note}")
    lines += ["", "* Pareto front (within the budget; validation accuracy against cycles), "
              "x over the budget; ~ cycles of the untrained model (a trial stopped before its "
              "end); test % is measured once, for the front only, after the search"]
    return "\n".join(lines)


def plot_front(study, path: Path, rs: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    b = budget_of(study)
    rs = [r for r in (rows(study) if rs is None else rs) if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fits, style, label in ((True, "o", "within the budget"), (False, "x", "over the budget")):
        sel = [r for r in rs if r["fits"] is fits and not r["pareto"]]
        if not sel:
            continue
        ax.scatter([r["cycles"] for r in sel], [100 * r["val_acc"] for r in sel], marker=style,
                   color="tab:blue" if fits else "tab:red", label=label, alpha=0.7)
    front = [r for r in rs if r["pareto"]]
    front.sort(key=lambda r: r["cycles"])
    ax.plot([r["cycles"] for r in front], [100 * r["val_acc"] for r in front], "-o",
            color="tab:green", label="Pareto front")
    for r in front:
        ax.annotate(str(r["trial"]), (r["cycles"], 100 * r["val_acc"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    if b.max_cycles is not None:
        ax.axvline(b.max_cycles, color="grey", ls="--", lw=1, label="cycle budget")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.tick_params(axis="x", labelrotation=30)  # seven-digit counts would run into each other
    ax.set_xlabel(f"cycles per inference ({b.mcu}, emulated)")
    ax.set_ylabel("validation accuracy (%), integer model")
    ax.set_title(f"study {study.study_name}: {len(rs)} complete trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(study, out: Path) -> str:
    """report.txt, trials.json and pareto.png in ``out``; returns the report text."""
    out.mkdir(parents=True, exist_ok=True)
    rs = rows(study)  # each call reads every trial from the storage
    text = report_text(study, rs)
    (out / "report.txt").write_text(text + "\n")
    (out / "trials.json").write_text(json.dumps(rs, indent=1) + "\n")
    if any(r["state"] == "complete" for r in rs):
        plot_front(study, out / "pareto.png", rs)
    return text


# --------------------------------------------------------------------------- best


def choose(study, max_cycles: int | None = None):
    """The most accurate trial (validation) within the budget and ``max_cycles``."""
    front = pareto(study, max_cycles)
    if not front:
        limit = "" if max_cycles is None else f" and {max_cycles:,} cycles"
        raise BitmcuError(f"study {study.study_name!r}: no complete trial within its budget{limit}"
                          "; run more trials or raise --max-cycles")
    return max(front, key=lambda t: (t.user_attrs["val_acc"], -t.user_attrs["cycles"]))


def _retrain(args) -> dict:
    """One seed of `best`: train (or go on with a stopped run), export, build, profile (median
    cycles of the first ``cycle_images`` test images). A seed whose result.json holds the same
    config, chip and image count is done and is not measured again."""
    base, config, seed, out, mcu, threads, cycle_images = args

    run = Path(out) / f"seed{seed}"
    done = run / "result.json"
    if done.is_file():
        had = json.loads(done.read_text())
        if (had.get("config"), had.get("mcu"), had.get("cycle_images")) == \
                (config, mcu, cycle_images):
            return had["result"]
    sets = [override(k, v) for k, v in {**config, "seed": seed, "data.validation": 0}.items()]
    if threads:
        sets.append(override("train.threads", threads))
    cfg = load_config(base, sets)
    if (run / "checkpoint.pt").is_file():
        _same_run(run, cfg)
        train(cfg, resume=run, quiet=True, log=lambda *a: None)
    else:
        train(cfg, run_dir=run, quiet=True, log=lambda *a: None)
    rep = export(run, run / "export", target=mcu, command="bitmcu search --best")
    images, expected = export_test_images(run / "export", cycle_images)
    fig = measure_export(run / "export", mcu, n_images=1, images=images,
                         expected=expected).figures()
    result = {"seed": seed, "run": str(run), "test_acc": rep.int_acc,
              "test_acc_float": rep.float_acc, "weight_bytes": rep.weight_bytes, **fig}
    done.write_text(json.dumps({"config": config, "mcu": mcu, "cycle_images": cycle_images,
                                "result": result}, indent=1) + "\n")
    return result


def _same_run(run: Path, cfg) -> None:
    """A seed folder's run must be of ``cfg`` to be resumed as it: else one error naming the
    keys that differ (a --best with other --set values needs another --out)."""

    differ = differences(load_checkpoint(run)["cfg"].to_dict(), cfg.to_dict(),
                         ("train.threads", "train.device"))
    if differ:
        what = ", ".join(f"{k} {had!r}, not {want!r}" for k, had, want in differ[:3])
        raise BitmcuError(f"{run} holds a run of another config ({what}); give --best another "
                          "--out, or remove that folder")


def best(study, out: Path, seeds: list[int], overrides: dict, max_cycles: int | None = None,
         workers: int = 1, log=print) -> dict:
    """Retrain the chosen trial's config on the whole training set for ``seeds``, export and
    profile each; write best.json and return it."""
    t = choose(study, max_cycles)
    b = budget_of(study)
    config = {**study.user_attrs.get("fixed", {}), **t.user_attrs["config"], **overrides}
    space_base = study.user_attrs.get("base")
    log(f"trial {t.number}: validation {100 * t.user_attrs['val_acc']:.2f}%, "
        f"{t.user_attrs['cycles']:,} cycles; retraining {json.dumps(config)} for seeds "
        f"{', '.join(map(str, seeds))} on the whole training set")
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    cycle_images = study.user_attrs.get("cycle_images", 1)  # a study from before the key: 1
    args = [(space_base, config, s, str(out), b.mcu, threads, cycle_images) for s in seeds]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_retrain, args)
    else:
        results = [_retrain(a) for a in args]
    summary = {"study": study.study_name, "trial": t.number, "config": config,
               "base": space_base, "mcu": b.mcu, "val_acc": t.user_attrs["val_acc"],
               "seeds": results,
               "median_test_acc": statistics.median(r["test_acc"] for r in results),
               "median_cycles": int(statistics.median(r["cycles"] for r in results))}
    (out / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def best_text(summary: dict) -> str:
    lines = [f"trial {summary['trial']} of study {summary['study']} ({summary['mcu']}): "
             f"{json.dumps(summary['config'])}",
             f"{'seed':>4} {'test %':>7} {'float %':>8} {'cycles':>10} {'flash':>7} {'RAM':>6}"
             "  run"]
    for r in summary["seeds"]:
        lines.append(f"{r['seed']:>4} {_pct(r['test_acc']):>7} {_pct(r['test_acc_float']):>8} "
                     f"{r['cycles']:>10,} {r['flash']:>7,} {r['ram']:>6,}  {r['run']}")
    lines.append(f"median test accuracy {_pct(summary['median_test_acc'])}% (integer model), "
                 f"median {summary['median_cycles']:,} cycles")
    return "\n".join(lines)
