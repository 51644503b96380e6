"""Compile the C engine and a model with the host C compiler, and run it from Python.

Two forms: a shared library called through ctypes (fast, used by ``verify``), and a standalone
executable (used with AddressSanitizer/UndefinedBehaviorSanitizer, which cannot be loaded into
the Python process).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import BitmcuError

WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Wconversion", "-pedantic", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]

# bitmcu_status in bitmcu.h: name and meaning
STATUS = {
    0: ("BITMCU_OK", "no error"),
    1: ("BITMCU_ERR_MAGIC", "the model table is not a bitmcu model"),
    2: ("BITMCU_ERR_VERSION", "the model was generated for another engine format version"),
    3: ("BITMCU_ERR_ARENA", "the arena is smaller than the model needs"),
    4: ("BITMCU_ERR_LAYER", "a layer's fields disagree with its op, scheme or neighbours"),
    5: ("BITMCU_ERR_ARG", "a NULL pointer argument"),
    6: ("BITMCU_ERR_MODEL", "the model's fields disagree with its layers"),
    7: ("BITMCU_ERR_CHECKSUM", "the table or the weights are not the ones the export wrote"),
}


def status_text(status: int) -> str:
    """'BITMCU_ERR_MAGIC (the model table is not a bitmcu model)' for a bitmcu_status."""
    name, meaning = STATUS.get(status, (f"status {status}", "not a bitmcu_status"))
    return f"{name} ({meaning})"


def template(name: str) -> str:
    """A C program or Makefile that bitmcu writes or compiles (deploy/templates/, package data)."""
    return (Path(str(resources.files("bitmcu"))) / "deploy" / "templates" / name).read_text()


# The host harnesses: both shims start with the table check (bitmcu.h and model.h have include
# guards); the mains drive the sanitizer builds through files.
CHECK_SHIM = template("host_check.c")
HOST_SHIM = CHECK_SHIM + template("host_shim.c")
HOST_MAIN = template("host_main.c")
DECODER_SHIM = CHECK_SHIM + template("host_decoder_shim.c")
DECODER_MAIN = template("host_decoder_main.c")
TEXT_SHIM = CHECK_SHIM + template("host_text_shim.c")
TEXT_MAIN = template("host_text_main.c")
_P, _N = ctypes.c_void_p, ctypes.c_int32
# each model kind's shim, sanitizer main, batch function and its arguments, by
# BITMCU_MODEL_KIND in model.h
KINDS = {"BITMCU_KIND_CLASSIFIER": (HOST_SHIM, HOST_MAIN, "bitmcu_host_run_batch", [_P, _N, _P]),
         "BITMCU_KIND_DECODER": (DECODER_SHIM, DECODER_MAIN, "bitmcu_host_generate_batch",
                                 [_P, _P, _N, _P, _P]),
         "BITMCU_KIND_TEXT": (TEXT_SHIM, TEXT_MAIN, "bitmcu_host_text_batch",
                              [_P, _N, _N, _P, _N, _P, _P])}


def engine_dir() -> Path:
    """Folder with bitmcu.c and bitmcu.h (package data)."""
    return Path(str(resources.files("bitmcu") / "engine"))


def find_cc(cc: str | None = None) -> str:
    cc = cc or os.environ.get("CC") or "cc"
    path = shutil.which(cc)
    if path is None:
        raise BitmcuError(f"C compiler {cc!r} not found; install gcc (apt-get install gcc) or set CC")
    return path


def _compile(args: list[str], what: str) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise BitmcuError(f"compiling {what} failed:\n{r.stderr.strip()}")


class HostModel:
    """A model header compiled for this machine with the shim of its entry point: bitmcu_run
    (:meth:`run`), bitmcu_generate (:meth:`generate`) where model.h is a decoder's, or
    bitmcu_text_step (:meth:`generate_text`) where it is a text model's."""

    def __init__(self, model_h: str, has_mul: bool = True, cc: str | None = None,
                 sanitize: bool = False, workdir: Path | None = None, check: bool = True):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bitmcu-host-")
            workdir = Path(self._tmp.name)
        self.dir = Path(workdir)
        (self.dir / "model.h").write_text(model_h)
        kind = next(k for k in KINDS if f"#define BITMCU_MODEL_KIND {k}\n" in model_h)
        shim, main, batch_fn, argtypes = KINDS[kind]
        (self.dir / "shim.c").write_text(shim)
        for f in ("bitmcu.c", "bitmcu.h"):
            shutil.copy(engine_dir() / f, self.dir / f)
        self.sanitize = sanitize
        cc = find_cc(cc)
        flags = WARNINGS + [f"-DBITMCU_HAS_MUL={int(has_mul)}", f"-I{self.dir}"]
        srcs = [str(self.dir / "shim.c"), str(self.dir / "bitmcu.c")]
        if sanitize:
            (self.dir / "main.c").write_text(main)
            self.exe = self.dir / "host_model"
            # the harness (file I/O, malloc) is not held to the engine's warning set
            _compile([cc, "-std=c99", *SANITIZE, f"-I{self.dir}", "-c",
                      str(self.dir / "main.c"), "-o", str(self.dir / "main.o")],
                     "sanitizer harness")
            _compile([cc, *flags, *SANITIZE, *srcs, str(self.dir / "main.o"), "-o",
                      str(self.exe)], "engine with sanitizers")
            self.lib = None
        else:
            so = self.dir / "libbitmcu_model.so"
            _compile([cc, *flags, "-O2", "-fPIC", "-shared", *srcs, "-o", str(so)], "engine")
            self.lib = ctypes.CDLL(str(so))
            fn = getattr(self.lib, batch_fn)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
            self.lib.bitmcu_host_check.argtypes = [ctypes.c_void_p]
            self.lib.bitmcu_host_check.restype = ctypes.c_int
            if check:
                status, _ = self.check()
                if status != 0:
                    self.close()
                    raise BitmcuError(f"model.h: the C engine's table check says "
                                      f"{status_text(status)}")

    def check(self) -> tuple[int, np.ndarray]:
        """bitmcu_check of the compiled table with its checksums, and bitmcu_check_mixture of
        a mixture prior's tables: (status, [table_sum and weight_sum stored in the table, the
        same computed from it, the mixture's sum stored and computed (0 where the fields do
        not check, and for a model without a mixture)])."""
        if self.lib is None:
            raise BitmcuError("HostModel.check needs the shared-library build (sanitize=False)")
        sums = np.zeros(6, dtype=np.uint32)
        return int(self.lib.bitmcu_host_check(sums.ctypes.data)), sums

    def run(self, images: np.ndarray, n_classes: int) -> np.ndarray:
        """(N, n_input) uint8 -> (N, n_classes) int32 logits computed by the C engine."""
        x = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).reshape(len(images), -1))
        n = len(x)
        logits = np.zeros((n, n_classes), dtype=np.int32)
        if self.lib is not None:
            rc = self.lib.bitmcu_host_run_batch(x.ctypes.data, n, logits.ctypes.data)
            if rc != 0:
                raise BitmcuError(f"C engine returned status {-rc}: {status_text(-rc)}")
            return logits
        img, out = self.dir / "images.bin", self.dir / "logits.bin"
        img.write_bytes(x.tobytes())
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        r = subprocess.run([str(self.exe), str(img), str(n), str(out)], capture_output=True,
                           text=True, env=env)
        if r.returncode != 0:
            raise BitmcuError(f"sanitizer build failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return np.frombuffer(out.read_bytes(), dtype=np.int32).reshape(n, n_classes).copy()

    def generate(self, seeds, classes, side: int, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(N,) seeds and classes -> ((N, side, side) uint8 images, (N, latent) int8 latents)
        generated by the C engine (its own PRNG and latent sampler)."""
        seeds = np.ascontiguousarray(np.asarray(seeds, dtype=np.int64) & 0xFFFFFFFF,
                                     dtype=np.uint32)
        classes = np.ascontiguousarray(classes, dtype=np.uint16)
        n = len(seeds)
        images = np.zeros((n, side, side), dtype=np.uint8)
        z = np.zeros((n, latent), dtype=np.int8)
        if self.lib is not None:
            rc = self.lib.bitmcu_host_generate_batch(seeds.ctypes.data, classes.ctypes.data, n,
                                                     images.ctypes.data, z.ctypes.data)
            if rc != 0:
                raise BitmcuError(f"C engine returned status {-rc}: {status_text(-rc)}")
            return images, z
        files = [self.dir / f for f in ("seeds.bin", "classes.bin", "images.bin", "z.bin")]
        files[0].write_bytes(seeds.tobytes())
        files[1].write_bytes(classes.tobytes())
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        r = subprocess.run([str(self.exe), str(files[0]), str(files[1]), str(n), str(files[2]),
                            str(files[3])], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise BitmcuError(f"sanitizer build failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        images = np.frombuffer(files[2].read_bytes(), dtype=np.uint8).reshape(n, side, side)
        return images.copy(), np.frombuffer(files[3].read_bytes(), dtype=np.int8).reshape(n, latent)

    def generate_text(self, seeds, steps: int, n_tokens: int, prefix: list[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) seeds -> ((N, steps) tokens, (N, steps, n_tokens) int32 logits) of one line per
        seed generated by the C engine (bitmcu_text_step: its own PRNG and sampler), zeros
        after each line's END; ``prefix`` replaces the first tokens drawn (as
        reference.generate_text does)."""
        pre = np.ascontiguousarray(prefix or [0], dtype=np.int32)
        seeds = np.ascontiguousarray(np.asarray(seeds, dtype=np.int64) & 0xFFFFFFFF,
                                     dtype=np.uint32)
        n = len(seeds)
        tokens = np.zeros((n, steps), dtype=np.int32)
        logits = np.zeros((n, steps, n_tokens), dtype=np.int32)
        if self.lib is not None:
            rc = self.lib.bitmcu_host_text_batch(seeds.ctypes.data, n, steps, pre.ctypes.data,
                                                 len(prefix or []), tokens.ctypes.data,
                                                 logits.ctypes.data)
            if rc != 0:
                raise BitmcuError(f"C engine returned status {-rc}: {status_text(-rc)}")
            return tokens, logits
        if prefix:
            raise BitmcuError("a prefix needs the shared-library build (sanitize=False)")
        files = [self.dir / f for f in ("seeds.bin", "tokens.bin", "logits.bin")]
        files[0].write_bytes(seeds.tobytes())
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        r = subprocess.run([str(self.exe), str(files[0]), str(n), str(steps), str(files[1]),
                            str(files[2])], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise BitmcuError(f"sanitizer build failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return (np.frombuffer(files[1].read_bytes(), dtype=np.int32).reshape(n, steps).copy(),
                np.frombuffer(files[2].read_bytes(), dtype=np.int32).reshape(n, steps,
                                                                            n_tokens).copy())

    def text_logits(self, tokens: np.ndarray, n_tokens: int) -> np.ndarray:
        """Teacher forcing: (N, T) given tokens (END first) -> (N, T, n_tokens) int32 logits of
        every step, by the C engine."""
        if self.lib is None:
            raise BitmcuError("HostModel.text_logits needs the shared-library build")
        tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        n, steps = tokens.shape
        logits = np.zeros((n, steps, n_tokens), dtype=np.int32)
        fn = self.lib.bitmcu_host_text_forced
        fn.argtypes = [_P, _N, _N, _P]
        rc = fn(tokens.ctypes.data, n, steps, logits.ctypes.data)
        if rc != 0:
            raise BitmcuError(f"C engine returned status {-rc}: {status_text(-rc)}")
        return logits

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
