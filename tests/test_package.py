"""The installed package: a wheel built from this checkout, installed into a fresh virtual
environment (its dependencies those of the test environment, so it costs seconds), trains a
named config, exports and verifies from outside the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from .conftest import ROOT, tiny_overrides


def _run(*args, cwd, env=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for verify")
def test_wheel_installed_apart_from_the_checkout_trains_exports_and_verifies(tmp_path):
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", dist, ROOT, cwd=tmp_path)
    (wheel,) = dist.glob("bitmcu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("bitmcu/configs/default.yaml", "bitmcu/configs/reference.yaml",
              "bitmcu/spaces/ch32v003-fc.yaml", "bitmcu/engine/bitmcu.c", "bitmcu/apps/die/files/die.c",
              "bitmcu/target/files/startup.S"):
        assert f in names, f
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
         "--no-deps", "--no-index", wheel, cwd=tmp_path)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # the dependencies (torch, numpy, ...): this environment's, not bitmcu itself
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    py, cli = venv / "bin" / "python", venv / "bin" / "bitmcu"
    where = _run(py, "-c", "import bitmcu; print(bitmcu.__file__)", cwd=work, env=env).stdout
    assert where.startswith(str(site)), where  # the installed copy, not the checkout's
    sets = [x for s in tiny_overrides(**{"train.epochs": 2}) for x in ("--set", s)]
    _run(cli, "train", "default", *sets, "--out", "run", "--quiet", cwd=work, env=env)
    _run(cli, "export", "run", "--out", "exp", "--target", "ch32v003", cwd=work, env=env)
    r = _run(cli, "verify", "run", "--limit", "100", cwd=work, env=env)
    assert "equal the numpy reference's for every image" in r.stdout
    r = _run(py, "-c", "from bitmcu.apps.search import load_space; s = load_space('ch32v003-fc'); "
             "print(s.base, s.config({}).model.hidden)", cwd=work, env=env)
    assert r.stdout.split()[0] == "reference"
