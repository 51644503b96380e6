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


# both shims: the table check (bitmcu.h and model.h have include guards)
CHECK_SHIM = """#include "bitmcu.h"
#include "model.h"

/* bitmcu_check of the model (with its checksums); the sums stored in and computed from it. */
int bitmcu_host_check(uint32_t *sums);
int bitmcu_host_check(uint32_t *sums) {
    const bitmcu_status st = bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, 0u);
    sums[0] = bitmcu_model_data.table_sum;
    sums[1] = bitmcu_model_data.weight_sum;
    sums[2] = sums[3] = 0u;
    if (st != BITMCU_OK) {
        return (int)st;
    }
    bitmcu_sums(&bitmcu_model_data, &sums[2], &sums[3]);
    return (int)bitmcu_check(&bitmcu_model_data, BITMCU_MODEL_TABLE_ENTRIES, BITMCU_CHECK_SUMS);
}
"""

HOST_SHIM = CHECK_SHIM + """\
#include "bitmcu.h"
#include "model.h"

/* Run n images (n_input bytes each); write n * n_classes logits. Returns 0 or -status. */
int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits);
int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    for (int32_t i = 0; i < n; i++) {
        bitmcu_status st = bitmcu_run(&bitmcu_model_data,
                                      images + (size_t)i * BITMCU_MODEL_N_INPUT, arena,
                                      BITMCU_MODEL_ARENA_WORDS,
                                      logits + (size_t)i * BITMCU_MODEL_N_CLASSES, NULL);
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}
"""

HOST_MAIN = """\
#include <stdio.h>
#include <stdlib.h>

#include "bitmcu.h"
#include "model.h"

int bitmcu_host_run_batch(const uint8_t *images, int32_t n, int32_t *logits);

/* usage: prog IMAGES.bin N LOGITS.bin */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int32_t n = (int32_t)atoi(argv[2]);
    size_t npx = (size_t)n * BITMCU_MODEL_N_INPUT, nlg = (size_t)n * BITMCU_MODEL_N_CLASSES;
    uint8_t *images = malloc(npx ? npx : 1);
    int32_t *logits = malloc((nlg ? nlg : 1) * sizeof(int32_t));
    FILE *f = fopen(argv[1], "rb");
    if (!images || !logits || !f || fread(images, 1, npx, f) != npx) return 3;
    fclose(f);
    int rc = bitmcu_host_run_batch(images, n, logits);
    if (rc != 0) return 4;
    f = fopen(argv[3], "wb");
    if (!f || fwrite(logits, sizeof(int32_t), nlg, f) != nlg) return 5;
    fclose(f);
    free(images);
    free(logits);
    return 0;
}
"""


DECODER_SHIM = CHECK_SHIM + """\
#include <string.h>

#include "bitmcu.h"
#include "model.h"

#define SIDE BITMCU_MODEL_OUTPUT_SIDE
typedef struct { uint8_t *image; } target;

static void put_rows(void *ctx, const uint8_t *rows, uint16_t y0, uint16_t n_rows,
                     uint16_t width) {
    memcpy(((target *)ctx)->image + (size_t)y0 * width, rows, (size_t)n_rows * width);
}

/* n images, each from seed[i] (latent sampled by the engine) and class[i]; writes
 * n * SIDE * SIDE pixels and n * latent latent values. Returns 0 or -status. */
int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents);
int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents) {
    static int32_t arena[BITMCU_MODEL_ARENA_WORDS];
    for (int32_t i = 0; i < n; i++) {
        uint32_t state = bitmcu_seed_state(seeds[i]);
        int8_t *z = latents + (size_t)i * BITMCU_MODEL_LATENT;
        bitmcu_sample_latent(&state, z, BITMCU_MODEL_LATENT, BITMCU_MODEL_LATENT_SCALE);
        target t = {images + (size_t)i * SIDE * SIDE};
        bitmcu_status st = bitmcu_generate(&bitmcu_model_data, z, classes[i], arena,
                                           BITMCU_MODEL_ARENA_WORDS, put_rows, &t);
        if (st != BITMCU_OK) {
            return -(int)st;
        }
    }
    return 0;
}
"""

DECODER_MAIN = """\
#include <stdio.h>
#include <stdlib.h>

#include "bitmcu.h"
#include "model.h"

int bitmcu_host_generate_batch(const uint32_t *seeds, const uint16_t *classes, int32_t n,
                               uint8_t *images, int8_t *latents);

/* usage: prog SEEDS.bin CLASSES.bin N IMAGES.bin LATENTS.bin */
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    int32_t n = (int32_t)atoi(argv[3]);
    size_t npx = (size_t)n * BITMCU_MODEL_OUTPUT_SIDE * BITMCU_MODEL_OUTPUT_SIDE;
    size_t nz = (size_t)n * BITMCU_MODEL_LATENT;
    uint32_t *seeds = malloc((size_t)n * 4 + 4);
    uint16_t *classes = malloc((size_t)n * 2 + 2);
    uint8_t *images = malloc(npx + 1);
    int8_t *latents = malloc(nz + 1);
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(seeds, 4, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    f = fopen(argv[2], "rb");
    if (!f || fread(classes, 2, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    if (bitmcu_host_generate_batch(seeds, classes, n, images, latents) != 0) return 4;
    f = fopen(argv[4], "wb");
    if (!f || fwrite(images, 1, npx, f) != npx) return 5;
    fclose(f);
    f = fopen(argv[5], "wb");
    if (!f || fwrite(latents, 1, nz, f) != nz) return 5;
    fclose(f);
    return 0;
}
"""


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
    """A model header compiled for this machine."""

    def __init__(self, model_h: str, has_mul: bool = True, cc: str | None = None,
                 sanitize: bool = False, workdir: Path | None = None, decoder: bool = False,
                 check: bool = True):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bitmcu-host-")
            workdir = Path(self._tmp.name)
        self.dir = Path(workdir)
        (self.dir / "model.h").write_text(model_h)
        self.decoder = decoder
        (self.dir / "shim.c").write_text(DECODER_SHIM if decoder else HOST_SHIM)
        for f in ("bitmcu.c", "bitmcu.h"):
            shutil.copy(engine_dir() / f, self.dir / f)
        self.sanitize = sanitize
        cc = find_cc(cc)
        flags = WARNINGS + [f"-DBITMCU_HAS_MUL={int(has_mul)}", f"-I{self.dir}"]
        srcs = [str(self.dir / "shim.c"), str(self.dir / "bitmcu.c")]
        if sanitize:
            (self.dir / "main.c").write_text(DECODER_MAIN if decoder else HOST_MAIN)
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
            fn = self.lib.bitmcu_host_generate_batch if decoder else self.lib.bitmcu_host_run_batch
            fn.argtypes = [ctypes.c_void_p] * (2 if decoder else 1) + [ctypes.c_int32] + \
                [ctypes.c_void_p] * (2 if decoder else 1)
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
        """bitmcu_check of the compiled table with its checksums: (status, [table_sum and
        weight_sum stored in the table, the same computed from it (0 where the table's
        fields do not check)])."""
        if self.lib is None:
            raise BitmcuError("HostModel.check needs the shared-library build (sanitize=False)")
        sums = np.zeros(4, dtype=np.uint32)
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

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
