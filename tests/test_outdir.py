"""Output folders under faults: one writer at a time, all-or-nothing replacement, kills at any
moment, and the C table that firmware compiles being the model that the reference runs."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bitmcu.apps.pipeline import export
from bitmcu.core import outdir
from bitmcu.core.errors import BitmcuError
from bitmcu.deploy.export import read_export

from .conftest import ROOT


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _python(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_folder_in_use_is_refused_naming_the_other_process(tmp_path, tiny_run):
    d = tmp_path / "run"
    with outdir.locked(d):
        p = _python(f"from bitmcu.core.outdir import locked\nwith locked({str(d)!r}): pass")
        _, err = p.communicate(timeout=60)
        assert p.returncode != 0 and f"in use by another bitmcu process (pid {os.getpid()}" in err
        r = subprocess.run([sys.executable, "-m", "bitmcu", "export", str(tiny_run), "--out",
                            str(d)], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        assert r.returncode == 2 and "in use by another bitmcu process" in r.stderr
        assert r.stderr.count("\n") == 1 and not d.exists()
    with outdir.locked(d, shared=True):  # readers share
        p = _python(f"from bitmcu.core.outdir import locked\nwith locked({str(d)!r}, shared=True): "
                    "print('in')")
        assert p.communicate(timeout=60)[0].strip() == "in"


def test_training_into_a_folder_in_use_is_refused(tmp_path):
    from bitmcu.train import train
    from bitmcu.train.config import load_config

    from .conftest import tiny_overrides

    d = tmp_path / "run"
    with outdir.locked(d):
        with pytest.raises(BitmcuError, match="in use by another bitmcu process"):
            train(load_config(None, tiny_overrides(**{"train.epochs": 1})), run_dir=d,
                  quiet=True)
    assert not (d / "checkpoint.pt").exists()


def test_export_replaces_the_whole_folder_and_refuses_what_is_not_one(tiny_run, tmp_path):
    out = tmp_path / "exp"
    export(tiny_run, out, n_images=8)
    (out / "stray.txt").write_text("from before")
    (out / "firmware-x").mkdir()
    first = _digest(out)
    export(tiny_run, out, n_images=3)
    second = _digest(out)
    assert "stray.txt" not in second and not (out / "firmware-x").exists()
    assert first["test_images.h"] != second["test_images.h"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.bitmcu-lock", "exp"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for target, msg in [("file", "exists and is not a folder"),
                        ("mine", r"exists and is not a bitmcu export \(no model.npz\)")]:
        with pytest.raises(BitmcuError, match=msg):
            export(tiny_run, tmp_path / target)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(BitmcuError, match="--images 0: embed 1..10000 test images"):
        export(tiny_run, out, n_images=0)


def test_exports_killed_at_any_moment_leave_the_old_folder_or_the_new(tiny_run, tmp_path):
    out = tmp_path / "exp"
    export(tiny_run, out, n_images=8)
    old = _digest(out)
    code = (f"from bitmcu.apps.pipeline import export\nexport({str(tiny_run)!r}, {str(out)!r}, "
            "n_images=3)")
    t0 = time.perf_counter()
    p = _python(code)
    assert p.wait(timeout=300) == 0
    full = time.perf_counter() - t0
    new = _digest(out)
    assert new != old
    seen = set()
    for i in range(12):  # kills spread over the whole run, the last ones near its end
        export(tiny_run, out, n_images=8 if i % 2 else 3)
        before = _digest(out)
        p = _python(code.replace("n_images=3", "n_images=8" if i % 2 == 0 else "n_images=3"))
        time.sleep(full * (0.3 + 0.7 * i / 11))
        p.send_signal(signal.SIGKILL)
        p.wait()
        now = _digest(out)
        assert now in (old, new), f"kill {i}: a mixed folder"
        seen.add("new" if now != before else "old")
        export(tiny_run, out, n_images=3)  # the next writer clears what the kill left
        assert not [q for q in tmp_path.iterdir() if outdir.STAGE in q.name or outdir.OLD in q.name]
    assert "old" in seen


def test_a_kill_between_the_fallback_renames_is_repaired(tmp_path, monkeypatch):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "model.npz").write_text("old")
    monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)  # a system without it
    real = os.rename
    calls = []

    def rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after moving the old folder away
        real(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        with outdir.writing(out, "model.npz", "export") as t:
            (t / "model.npz").write_text("new")
    monkeypatch.setattr(os, "rename", real)
    assert not out.exists()  # the old one is under its OLD name
    with outdir.locked(out):
        outdir.staging(out)  # the next writer first puts it back
    assert (out / "model.npz").read_text() == "old"
    with outdir.writing(out, "model.npz", "export") as t:
        (t / "model.npz").write_text("new")
    assert (out / "model.npz").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.bitmcu-lock", "exp"]


def test_the_kernels_atomic_exchange_replaces_a_folder_where_it_is_offered(tmp_path, monkeypatch):
    """Where the kernel swaps two folders in one step (Linux renameat2), replacing an output
    takes that path: no rename of the old folder, no OLD folder, never a moment without it."""
    probe_a, probe_b = tmp_path / "a", tmp_path / "b"
    probe_a.mkdir()
    probe_b.mkdir()
    if not outdir._exchange(probe_a, probe_b):
        pytest.skip("this system offers no atomic exchange of folders")
    out = tmp_path / "exp"
    out.mkdir()
    (out / "model.npz").write_text("old")
    swaps, renames = [], []
    real_exchange, real_rename = outdir._exchange, os.rename
    monkeypatch.setattr(outdir, "_exchange",
                        lambda a, b: swaps.append(real_exchange(a, b)) or swaps[-1])
    monkeypatch.setattr(os, "rename", lambda a, b: renames.append((a, b)) or real_rename(a, b))
    with outdir.writing(out, "model.npz", "export") as t:
        (t / "model.npz").write_text("new")
    assert swaps == [True] and renames == []
    assert (out / "model.npz").read_text() == "new"
    assert not list(tmp_path.glob(f".exp{outdir.OLD}*")) and not list(tmp_path.glob(f".exp{outdir.STAGE}*"))


def test_a_reader_in_a_read_only_place_needs_no_lock(tmp_path, monkeypatch):
    """A model in a place nobody can write (an installed package, a read-only mount) is read
    without a lock; where the lock file is there already, it is locked read-only."""
    import errno

    real_open = os.open
    made = []

    def read_only_fs(path, flags, mode=0o777):
        if flags & os.O_CREAT or flags & os.O_RDWR:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        fd = real_open(path, flags, mode)
        made.append(path)
        return fd

    monkeypatch.setattr(os, "open", read_only_fs)
    d = tmp_path / "model"
    with outdir.locked(d, shared=True):
        pass
    assert not list(tmp_path.iterdir()) and made == []  # nothing made, nothing opened
    with pytest.raises(BitmcuError, match="cannot write there"):  # a writer still needs one
        with outdir.locked(d):
            pass
    monkeypatch.setattr(os, "open", real_open)
    lock = tmp_path / ".model.bitmcu-lock"
    lock.write_text("")
    monkeypatch.setattr(os, "open", read_only_fs)
    with outdir.locked(d, shared=True):
        assert made == [lock]  # the existing lock file, read-only


def test_firmware_needs_model_h_and_model_npz_of_one_model(tiny_run, tmp_path):
    from bitmcu.deploy.codegen import model_header

    from .test_engine import random_model

    out = tmp_path / "exp"
    export(tiny_run, out)
    read_export(out, check=True)
    header = (out / "model.h").read_text()
    at = header.index("0x", header.index("static const uint8_t bitmcu_w0"))
    (out / "model.h").write_text(header[:at] + ("0x00" if header[at:at + 4] != "0x00" else "0x01")
                                 + header[at + 4:])
    with pytest.raises(BitmcuError, match="BITMCU_ERR_CHECKSUM"):
        read_export(out, check=True)
    other = random_model(np.random.default_rng(1), ["4bitsym"], size=16, widths=(24,),
                         n_classes=10)
    (out / "model.h").write_text(model_header(other, "test"))
    with pytest.raises(BitmcuError, match="model.h and model.npz hold different models"):
        read_export(out, check=True)


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None, reason="no cross compiler")
def test_profile_names_the_engine_status_and_the_chip(tiny_run, tmp_path, monkeypatch):
    from bitmcu.target import firmware
    from bitmcu.target.emulator import profile

    out = tmp_path / "exp"
    export(tiny_run, out, target="ch32v003")
    fw = firmware.build_firmware(out, "ch32v003", n_images=2)
    with pytest.raises(BitmcuError, match="built for the ch32v003.*--mcu ch32v003"):
        profile(fw.elf, mcu="ch32v002")
    header = (out / "model.h").read_text()
    (out / "model.h").write_text(header.replace(".magic = BITMCU_MAGIC,", ".magic = 0x12345678u,"))
    with pytest.raises(BitmcuError, match="BITMCU_ERR_MAGIC"):
        firmware.build_firmware(out, "ch32v003", n_images=2)  # refused before building
    real = firmware.read_export
    monkeypatch.setattr(firmware, "read_export", lambda d, check=False: real(d))
    bad = firmware.build_firmware(out, "ch32v003", n_images=2, out=tmp_path / "bad")
    with pytest.raises(BitmcuError, match=r"returned BITMCU_ERR_MAGIC \(the model table is not "
                                          r"a bitmcu model\) on image 0"):
        profile(bad.elf)


def test_a_resume_after_the_last_checkpoint_writes_what_the_run_owes(tiny_run, tmp_path):
    from bitmcu.train import train

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for f in ("curves.png", "weights.png", "metrics.jsonl"):
        (run / f).unlink()
    logs = []
    train(None, resume=run, log=logs.append)
    assert all((run / f).is_file() for f in ("curves.png", "weights.png", "metrics.jsonl"))
    assert "writing metrics.jsonl, curves.png, weights.png" in logs[0]
    logs.clear()
    train(None, resume=run, log=logs.append)
    assert "nothing to do" in logs[0]
