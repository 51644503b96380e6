"""Many training runs side by side on one machine (a GPU machine: each run one CPU thread and
the shared GPU), until they finish or a deadline passes.

    python benchmarks/sweep.py benchmarks/sweeps/cnn-ch32v002-gpu.json --deadline 540 \
        --extra train.device=cuda --extra train.threads=1

The jobs file is a JSON list of {"name", "config", "set": [KEY=VALUE...], "after": [names]}; each
job trains `bitmcu train CONFIG --set ... --out ROOT/NAME` (ROOT: --root, default runs/g10) and
starts once the jobs named in "after" (its teachers) have finished. At the deadline every run
still going is stopped with SIGTERM: its last finished epoch stays in its checkpoint, and
`bitmcu train --resume ROOT/NAME --set train.device=cpu` finishes it elsewhere. A status line
every 30 s, a summary (epochs, last test accuracy, median epoch seconds) at the end.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("jobs")
ap.add_argument("--deadline", type=float, required=True)
ap.add_argument("--extra", action="append", default=[])
ap.add_argument("--max", type=int, default=14, help="runs at a time")
ap.add_argument("--root", default="runs/g10")
a = ap.parse_args()

t_start = time.time()
jobs = json.loads(Path(a.jobs).read_text())
root = Path(a.root)
root.mkdir(parents=True, exist_ok=True)
procs: dict[str, subprocess.Popen] = {}
done: dict[str, int] = {}


def epochs_of(name):
    p = root / name / "metrics.jsonl"
    if not p.exists():
        return 0
    return len(p.read_text().splitlines())


def start(job):
    sets = [*job.get("set", []), *a.extra]
    cmd = [sys.executable, "-m", "bitmcu.cli", "train", job["config"], "--out", str(root / job["name"]),
           "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    log = open(root / f"{job['name']}.log", "w")
    log.write(" ".join(cmd) + "\n")
    log.flush()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs[job["name"]] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"[{time.time() - t_start:6.0f}s] start {job['name']}", flush=True)


last = 0.0
while True:
    for name, p in list(procs.items()):
        if p.poll() is not None:
            done[name] = p.returncode
            del procs[name]
            print(f"[{time.time() - t_start:6.0f}s] end {name} rc={p.returncode} epochs={epochs_of(name)}",
                  flush=True)
    waiting = [j for j in jobs if j["name"] not in procs and j["name"] not in done]
    for j in waiting:
        if len(procs) >= a.max:
            break
        deps = j.get("after", [])
        if any(d in done and done[d] != 0 for d in deps):
            done[j["name"]] = -99
            print(f"skip {j['name']}: a teacher failed", flush=True)
            continue
        if all(done.get(d) == 0 for d in deps):
            start(j)
    if not procs and all(j["name"] in done for j in jobs):
        break
    el = time.time() - t_start
    if el > a.deadline:
        print(f"[{el:6.0f}s] deadline: stopping {sorted(procs)}", flush=True)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        stop_by = time.time() + 20
        for name, p in procs.items():
            try:
                p.wait(max(0.1, stop_by - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
            print(f"  {name}: {epochs_of(name)} epochs", flush=True)
        break
    if el - last > 30:
        last = el
        print(f"[{el:6.0f}s] " + " ".join(f"{n}:{epochs_of(n)}" for n in sorted(procs)), flush=True)
    time.sleep(2)

for j in jobs:
    n = j["name"]
    p = root / n / "metrics.jsonl"
    if p.exists():
        ms = [json.loads(x) for x in p.read_text().splitlines()]
        secs = sorted(m["seconds"] for m in ms)
        print(f"{n}: {len(ms)} epochs, last test {100 * ms[-1]['test_acc']:.2f}%, "
              f"median epoch {secs[len(secs) // 2]:.1f}s", flush=True)
    else:
        print(f"{n}: no epoch", flush=True)
