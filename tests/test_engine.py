"""C engine == numpy reference, bit for bit, for every scheme (with and without multiplier)."""

import dataclasses
import itertools
import shutil
import subprocess

import numpy as np
import pytest

from bitmcu.core.errors import BitmcuError
from bitmcu.deploy import reference
from bitmcu.deploy.codegen import model_header
from bitmcu.deploy.hostc import WARNINGS, HostModel, engine_dir
from bitmcu.deploy.ir import INT32_MAX, FCLayer, IntModel
from bitmcu.deploy.plan import plan
from bitmcu.deploy.verify import compare_c
from bitmcu.quant import REGISTRY, get_scheme

SCHEMES = [s.name for s in REGISTRY.values() if s.exportable]


def random_model(rng, schemes, size=6, widths=(23, 17), n_classes=5, act_max=255,
                 bias_unit=False):
    dims = [size * size, *widths, n_classes]
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        sch = REGISTRY[schemes[i % len(schemes)]]
        levels = rng.choice(np.array(sch.levels), size=(b, a + int(bias_unit)))
        layers.append(FCLayer.from_levels(sch.name, levels, relu=i < len(dims) - 2))
    return IntModel.classifier(size, n_classes, act_max, layers, 0xC0FFEE, "random",
                               bias_unit=bias_unit).validate()


def random_images(rng, n, npx):
    x = rng.integers(0, 256, (n, npx)).astype(np.uint8)
    x[rng.random((n, npx)) < 0.6] = 0  # background, as in MNIST
    x[0] = 0  # blank image
    x[1] = 255  # saturated image
    x[2] = 0
    x[2, npx // 2] = 1  # a single dim pixel
    x[3] = rng.integers(0, 128, npx)  # no shift needed
    return x


@pytest.mark.parametrize("scheme", SCHEMES)
def test_random_layer_per_scheme(scheme):
    rng = np.random.default_rng(REGISTRY[scheme].id)
    model = random_model(rng, [scheme], widths=(), n_classes=19)
    x = random_images(rng, 200, model.n_input)
    ref, outs = compare_c(model, x)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)
    assert np.abs(ref).max() > 0


@pytest.mark.parametrize("bias_unit", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_random_model_per_scheme(scheme, bias_unit):
    rng = np.random.default_rng(100 + REGISTRY[scheme].id)
    model = random_model(rng, [scheme], bias_unit=bias_unit)
    x = random_images(rng, 300, model.n_input)
    ref, outs = compare_c(model, x)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)
    # activations are really used: predictions vary across images
    assert len(np.unique(ref.argmax(1))) > 1


def test_mixed_schemes_wide_gaps_and_act_bits():
    rng = np.random.default_rng(7)
    # 20x20 = 400 inputs: gaps wider than 255 between nonzero pixels need filler entries
    model = random_model(rng, ["ternary", "8bit", "fp130", "nf4"], size=20, widths=(300, 40, 9),
                         n_classes=7, act_max=127)
    x = random_images(rng, 50, model.n_input)
    x[4] = 0
    x[4, 0] = x[4, 399] = 200
    x[5] = 0
    x[5, 399] = 9
    ref, outs = compare_c(model, x)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_first_layer_with_gaps_wider_than_255_per_scheme(scheme):
    """Every kernel walks the filler entries of long zero runs (value 0) without effect."""
    rng = np.random.default_rng(31 + REGISTRY[scheme].id)
    model = random_model(rng, [scheme, "4bitsym"], size=20, widths=(13, 5), n_classes=4)
    x = random_images(rng, 12, model.n_input)
    x[:6] = 0
    x[0, 0] = x[0, 399] = 200
    x[1, 399] = 9
    x[2, 0] = 255
    x[3, 1] = x[3, 300] = x[3, 301] = 17
    x[4, 257] = 3
    ref, outs = compare_c(model, x)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_sanitizers_on_random_models_of_every_scheme():
    rng = np.random.default_rng(11)
    for i, scheme in enumerate(SCHEMES):
        model = random_model(rng, [scheme, SCHEMES[(i + 3) % len(SCHEMES)]], size=5 + i % 3,
                             widths=(11 + i, 6))
        x = random_images(rng, 40, model.n_input)
        ref, outs = compare_c(model, x, builds=(i % 2 == 0,), sanitize=True)
        for c in outs.values():
            np.testing.assert_array_equal(c, ref)


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("mul", [0, 1])
def test_engine_compiles_clean(cc, mul, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    r = subprocess.run([cc, *WARNINGS, "-O2", f"-DBITMCU_HAS_MUL={mul}", "-c",
                        str(engine_dir() / "bitmcu.c"), "-o", str(tmp_path / "b.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_engine_checks_magic_and_version():
    rng = np.random.default_rng(3)
    model = random_model(rng, ["4bitsym"])
    header = model_header(model, "test")
    x = random_images(rng, 5, model.n_input)
    for old, new, status in [(".magic = BITMCU_MAGIC,", ".magic = 0x12345678u,", 1),
                             (".version = BITMCU_FORMAT_VERSION,", ".version = 6u,", 2),
                             (".arena_words = BITMCU_MODEL_ARENA_WORDS,",
                              ".arena_words = BITMCU_MODEL_ARENA_WORDS + 1u,", 3)]:
        host = HostModel(header.replace(old, new), check=False)  # bitmcu_run's own checks
        try:
            with pytest.raises(BitmcuError, match=f"status {status}"):
                host.run(x, model.n_classes)
        finally:
            host.close()


def test_ir_roundtrip_and_validation(tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, ["2bitsym", "4bit"])
    model.save(tmp_path / "m.npz")
    back = IntModel.load(tmp_path / "m.npz")
    x = random_images(rng, 20, model.n_input)
    np.testing.assert_array_equal(reference.run(back, x)[0], reference.run(model, x)[0])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(BitmcuError, match="not a readable bitmcu integer model"):
        IntModel.load(tmp_path / "bad.npz")
    bad = random_model(rng, ["4bitsym"])
    bad.ops[3] = FCLayer.from_levels("4bitsym", np.ones((17, 22), dtype=int), relu=True)
    with pytest.raises(BitmcuError, match=r"op 3 \(fc\): takes 22 inputs but receives 23"):
        bad.validate()


def test_model_files_with_other_ops_or_versions_are_refused(tmp_path):
    """model.npz holds the op sequence: a CNN survives the round trip; a file of another IR
    version, with an op this bitmcu does not know or without an op's weights is refused with
    one error naming what is wrong."""
    import io
    import json

    cnn = random_cnn(np.random.default_rng(6), "fp130", stages=("dw*2", "pool", "dw", "pool"))
    cnn.save(tmp_path / "cnn.npz")
    back = IntModel.load(tmp_path / "cnn.npz")
    assert [op.name for op in back.ops] == [op.name for op in cnn.ops]
    x = random_images(np.random.default_rng(7), 10, cnn.n_input)
    np.testing.assert_array_equal(reference.run(back, x)[0], reference.run(cnn, x)[0])

    def rewrite(name, edit_meta=None, drop=None):
        with np.load(tmp_path / "cnn.npz") as z:
            arrays = {k: z[k] for k in z.files if k != drop}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        if edit_meta:
            edit_meta(meta)
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        (tmp_path / name).write_bytes(buf.getvalue())
        return tmp_path / name

    with pytest.raises(BitmcuError, match="not a bitmcu integer model of this version .*re-run"):
        IntModel.load(rewrite("old.npz", lambda m: m.pop("ir_version")))
    with pytest.raises(BitmcuError, match=r"op 2 is 'softmax', which this bitmcu does not know "
                                          r"\(pixels, latent, conv1, dw, pool, norm, fc, stage, tokens, "
                                          r"embed, cell, sample\)"):
        IntModel.load(rewrite("op.npz", lambda m: m["ops"][2].update(op="softmax")))
    with pytest.raises(BitmcuError, match="not a readable bitmcu integer model, truncated or "
                                          "changed .*'w'"):
        IntModel.load(rewrite("w.npz", drop="w_1"))
    # a sequence the engine does not run: the ops in another order
    def swap(m):
        m["ops"][5], m["ops"][6] = m["ops"][6], m["ops"][5]  # pool and norm (neither has arrays)

    with pytest.raises(BitmcuError, match=r"the engine runs pixels, then .*this model is: pixels "
                                          r"conv1 dw pool dw norm pool fc logits"):
        IntModel.load(rewrite("seq.npz", swap))
    with pytest.raises(BitmcuError, match="not a readable bitmcu integer model"):
        IntModel.load(rewrite("short.npz", lambda m: m["ops"].pop(0)))  # arrays of no op


@pytest.mark.parametrize("scheme, byte", [("ternary", 243), ("8bit", 0x80), ("4bit", 0x08)])
def test_codes_a_scheme_never_writes_are_refused(scheme, byte):
    """A ternary byte above 242, the 8-bit code -128, the 4-bit 'minus zero': the kernels' tables
    and the accumulator bounds assume they never occur, so such a model is refused."""
    rng = np.random.default_rng(9)
    model = random_model(rng, [scheme])
    model.find("fc")[0].weights[2, 1] = byte
    with pytest.raises(BitmcuError, match=rf"op 2 \(fc\): packed weights hold codes that {scheme} "
                                          "does not write"):
        model.validate()
    if scheme != "4bit":  # front-end kernels decode the same codes
        cnn = random_cnn(rng, scheme)
        cnn.ops[2].weights[0, 0] = byte
        with pytest.raises(BitmcuError, match=r"op 2 \(dw\): packed weights hold"):
            cnn.validate()


def test_accumulator_bound_from_actual_weights():
    w = np.zeros((3, 200), dtype=int)
    w[1, :100] = 127
    w[2, :] = -127
    layer = FCLayer.from_levels("8bit", w, relu=False)
    assert layer.accumulator_bound(255) == 200 * 127 * 255
    # the widest layer the engine accepts, with the largest weights and activations, still fits
    assert 65535 * 127 * 255 <= INT32_MAX


def test_overflowing_model_is_refused(monkeypatch):
    """Crafted weights whose worst case passes a (lowered) int32 limit are refused by name."""
    import bitmcu.deploy.ops as ops

    rng = np.random.default_rng(9)
    model = random_model(rng, ["8bit"])
    bound = max(L.accumulator_bound(255) for L in model.find("fc"))
    monkeypatch.setattr(ops, "INT32_MAX", bound - 1)
    with pytest.raises(BitmcuError, match=r"worst-case accumulator \d+ overflows int32"):
        model.validate()


def random_cnn(rng, conv_scheme, fc_scheme="4bitsym", channels=5, size=16,
               stages=("dw", "pool", "dw", "pool"), hidden=(12,), n_classes=6):
    """Random levels; each conv's shift calibrated (as in training) on half of a batch of random
    images, so the other half saturates now and then."""
    from bitmcu.deploy.ir import ConvLayer, PoolLayer

    sch = REGISTRY[conv_scheme]
    front, side = [], size
    a = random_images(rng, 40, size * size).astype(np.int64).reshape(40, 1, size, size)[:20]
    for st in ("conv1", *stages):
        if st == "pool":
            front.append(PoolLayer(channels, side))
            a = reference.maxpool2(a)
        else:
            st, _, mult = st.partition("*")  # dw*K: a depth multiplier
            mult = int(mult or 1)
            channels *= mult
            levels = rng.choice(np.array(sch.levels), size=(channels, 9))
            raw = reference.conv3x3(ConvLayer.from_levels(st, conv_scheme, levels, side, 0, mult),
                                    a, 2**40)
            shift = 0
            while (int(raw.max()) >> shift) > 255:
                shift += 1
            front.append(ConvLayer.from_levels(st, conv_scheme, levels, side, shift, mult))
            a = reference.requant(raw, shift, 255)
        side = front[-1].out_side
    dims = [channels * side * side, *hidden, n_classes]
    layers = [FCLayer.from_levels(fc_scheme, rng.choice(np.array(REGISTRY[fc_scheme].levels),
                                                        size=(b, a)), relu=i < len(dims) - 2)
              for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))]
    return IntModel.classifier(size, n_classes, 255, layers, 7, "cnn", front).validate()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_random_cnn_per_conv_scheme(scheme):
    rng = np.random.default_rng(200 + REGISTRY[scheme].id)
    model = random_cnn(rng, scheme)
    x = random_images(rng, 60, model.n_input)
    ref, outs = compare_c(model, x)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)
    feats = reference.front_end(model, x)
    assert feats.shape == (60, model.n_features) and 0 < feats.max() <= 255


def test_cnn_front_end_entry_point_follows_the_conv_schemes():
    """All-8-bit convolutions get the entry point without the any-scheme decoder; the table
    check refuses that entry point for a model with another conv scheme (it would misread its
    weights)."""
    rng = np.random.default_rng(23)
    assert ".step = bitmcu_front_end_8bit}" in model_header(random_cnn(rng, "8bit"), "t")
    model = random_cnn(rng, "fp130")
    header = model_header(model, "t")
    assert ".step = bitmcu_front_end}" in header
    wrong = header.replace(".step = bitmcu_front_end}", ".step = bitmcu_front_end_8bit}")
    with pytest.raises(BitmcuError, match="table check says BITMCU_ERR_LAYER"):
        HostModel(wrong)  # bitmcu_run trusts a checked table: the check is where this is found


def test_cnn_other_shapes_and_sanitizers():
    rng = np.random.default_rng(17)
    model = random_cnn(rng, "8bit", "2bitsym", channels=3, size=12, stages=("pool", "dw"),
                       hidden=(9, 8))
    x = random_images(rng, 30, model.n_input)
    ref, outs = compare_c(model, x, sanitize=True)
    for c in outs.values():
        np.testing.assert_array_equal(c, ref)
    with pytest.raises(BitmcuError, match=r"op 2 \(pool\): pools 5 channels of 9x9 .*receives 5x10x10"):
        from bitmcu.deploy.ir import PoolLayer

        bad = random_cnn(rng, "8bit", size=12, stages=("pool", "dw"))
        bad.ops[2] = PoolLayer(bad.ops[2].channels, 9)
        bad.validate()


def ink_boxes(rng, n, side):
    """Images whose ink fills a random rectangle (any size, any position, edges and corners
    included), as the conv kernels skip what lies outside the nonzero pixels' box."""
    x = np.zeros((n, side, side), dtype=np.uint8)
    for i in range(n):
        if i < 4:  # one pixel in each corner
            x[i, (i // 2) * (side - 1), (i % 2) * (side - 1)] = 1 + 60 * i
            continue
        y0, x0 = rng.integers(0, side, 2)
        y1, x1 = rng.integers(y0 + 1, side + 1), rng.integers(x0 + 1, side + 1)
        x[i, y0:y1, x0:x1] = rng.integers(0, 256, (y1 - y0, x1 - x0))
        x[i, y0, x0] = x[i, y1 - 1, x1 - 1] = 255  # the rectangle is the box
    return x.reshape(n, side * side)


@pytest.mark.parametrize("conv_scheme", ["8bit", "fp130"])
def test_cnn_ink_in_part_of_the_image(conv_scheme):
    rng = np.random.default_rng(31)
    for size, stages in ((16, ("dw", "pool", "dw", "pool")), (12, ("pool", "dw"))):
        model = random_cnn(rng, conv_scheme, channels=6, size=size, stages=stages)
        x = ink_boxes(rng, 80, size)
        ref, outs = compare_c(model, x)
        for c in outs.values():
            np.testing.assert_array_equal(c, ref)
        feats = reference.front_end(model, x)
        assert (feats[4:] > 0).any(axis=1).mean() > 0.5  # the ink reaches the features


@pytest.mark.parametrize("conv_scheme", ["8bit", "fp130"])
def test_cnn_depth_multipliers(conv_scheme):
    """dw*K stages: each map that feeds K channels is computed once and kept; C == reference."""
    rng = np.random.default_rng(41)
    for size, stages in ((16, ("dw", "pool", "dw*2", "pool")), (16, ("dw*3", "pool", "dw*2", "pool")),
                         (14, ("dw*2", "dw*2", "pool", "dw"))):
        model = random_cnn(rng, conv_scheme, channels=3, size=size, stages=stages)
        kept = [L for L, nxt in itertools.pairwise(model.front) if nxt.mult > 1]
        p = plan(model)  # the maps: two turn buffers of the largest map, one per kept map
        maps_at = p.feat_at + (model.n_features + 3) // 4 * 4
        assert p.bytes - maps_at == 2 * ((model.max_map + 3) // 4 * 4) + sum(
            (L.out_side ** 2 + 3) // 4 * 4 for L in kept)
        spans = [(b, b + n) for b, n in zip(p.bufs, p.sizes, strict=False)][:len(model.front)]
        for i, (_, nxt) in enumerate(itertools.pairwise(model.front)):
            if nxt.mult > 1:  # a kept map shares no byte with any other map
                assert all(e <= spans[i][0] or spans[i][1] <= b
                           for j, (b, e) in enumerate(spans) if j != i)
        x = np.concatenate([ink_boxes(rng, 20, size), random_images(rng, 20, size * size)])
        ref, outs = compare_c(model, x, sanitize=size == 14)
        for c in outs.values():
            np.testing.assert_array_equal(c, ref)
        # output channel k of a dw*K layer convolves input channel k // K
        L = next(L for L in model.front if L.mult > 1)
        a = rng.integers(0, 256, (2, L.channels // L.mult, L.side, L.side))
        out = reference.conv3x3(L, a, 255)
        one = dataclasses.replace(L, channels=1, mult=1, weights=get_scheme(L.scheme).pack(
            L.levels()[L.mult + 1 : L.mult + 2]))
        np.testing.assert_array_equal(out[:, L.mult + 1 : L.mult + 2],
                                      reference.conv3x3(one, a[:, 1:2], 255))
    bad = random_cnn(rng, "8bit", channels=3, stages=("dw", "pool", "dw*2", "pool"))
    bad.ops[4] = dataclasses.replace(bad.ops[4], mult=3)
    with pytest.raises(BitmcuError, match=r"op 4 \(dw\): 6 channels, expected 9"):
        bad.validate()


def _fuzz_both_ways(model, trials=3000):
    """bitmcu_check with checksums: every table that checks OK computes what the unmutated one
    does. Without them: every table that checks OK runs without a sanitizer report, and a
    mutation of fields that cannot matter never changes the output."""
    from bitmcu.deploy.fuzz import fuzz_tables

    full = fuzz_tables(model, trials, seed=1, sums=True)
    assert full.changed == 0 and full.bad_emit == 0, full
    assert full.status["unknown status"] == 0 and full.status["BITMCU_ERR_CHECKSUM"] > 0
    assert sum(v > 0 for v in full.status.values()) >= 5, full  # errors are told apart
    bare = fuzz_tables(model, trials, seed=2, sums=False, has_mul=False)
    assert bare.neutral_changed == 0 and bare.bad_emit == 0 and bare.ran > 0, bare
    assert bare.status["BITMCU_ERR_CHECKSUM"] == 0
    return full, bare


def test_fuzzed_fc_tables_never_crash_the_engine():
    rng = np.random.default_rng(11)
    _fuzz_both_ways(random_model(rng, ["4bitsym", "ternary", "binary"], bias_unit=True))


def test_fuzzed_cnn_tables_never_crash_the_engine():
    rng = np.random.default_rng(12)
    _fuzz_both_ways(random_cnn(rng, "4bit", stages=("dw*2", "pool", "dw", "pool")))


def test_host_model_refuses_a_table_whose_weights_were_changed():
    rng = np.random.default_rng(13)
    model = random_model(rng, ["8bit", "4bitsym"])
    header = model_header(model, "test")
    host = HostModel(header)  # the Python checksums are the ones the C engine computes
    status, sums = host.check()
    host.close()
    assert status == 0 and sums[0] == sums[2] and sums[1] == sums[3]
    first = header.index("static const uint8_t bitmcu_w0")
    body = header.index("0x", first)
    tampered = header[:body] + "0x00, 0x00" + header[body + 10:]
    assert tampered != header
    with pytest.raises(BitmcuError, match="BITMCU_ERR_CHECKSUM"):
        HostModel(tampered)


def test_python_mirrors_of_the_c_enums_and_constants_match_bitmcu_h():
    """Ops, statuses, model kinds and the shared constants: Python's copies equal bitmcu.h's."""
    import re

    from bitmcu.core import rng
    from bitmcu.deploy import codegen, hostc, ir

    header = (hostc.engine_dir() / "bitmcu.h").read_text()
    enum = lambda prefix: {k: int(v) for k, v in  # noqa: E731
                           re.findall(rf"\b{prefix}_(\w+) = (\d+)", header)}
    assert enum("BITMCU_OP") == {op.upper(): v for op, v in codegen.OPS.items()}
    # every registered op with a table row names a C op and C functions that bitmcu.h declares
    from bitmcu.deploy.ops import OPS

    models = [random_model(np.random.default_rng(1), ["8bit"]),
              random_cnn(np.random.default_rng(2), "8bit"), random_cnn(np.random.default_rng(3),
                                                                      "fp130")]
    steps = {op.step(m) for m in models for op in m.ops if op.c_op}
    steps |= {"bitmcu_step_fc_requant", "bitmcu_step_stages"}  # a decoder's (test_decoder)
    steps |= {"bitmcu_step_embed", "bitmcu_step_cell", "bitmcu_step_sample"}  # test_text's
    for name in steps:
        assert re.search(rf"\bconst bitmcu_layer \*{name}\(bitmcu_state \*s, "
                         r"const bitmcu_layer \*at\);", header), name
    seen = {op.name for m in models for op in m.ops}
    assert seen | {"latent", "stage", "tokens", "embed", "cell", "sample"} == set(OPS)
    for cls in set(OPS.values()):
        c_op = getattr(cls, "c_op", None)
        assert c_op is None or isinstance(c_op, property) or c_op in codegen.OPS, cls
    statuses = {f"BITMCU_{k}": v for k, v in enum("BITMCU").items()
                if k == "OK" or k.startswith("ERR_")}
    assert statuses == {name: v for v, (name, _) in hostc.STATUS.items()}
    assert int(re.search(r"BITMCU_N_STATUS (\d+)u", header).group(1)) == len(hostc.STATUS)
    assert set(enum("BITMCU_KIND")) == {"CLASSIFIER", "DECODER", "TEXT"}
    define = lambda name: int(re.search(rf"#define {name} (0x[0-9A-Fa-f]+|\d+)u?\b",  # noqa: E731
                                        header).group(1), 0)
    assert define("BITMCU_MAGIC") == ir.MAGIC
    assert define("BITMCU_FORMAT_VERSION") == ir.FORMAT_VERSION
    assert define("BITMCU_MAX_FRONT") == ir.MAX_FRONT
    assert define("BITMCU_CLASS_VALUE") == ir.CLASS_VALUE
    assert define("BITMCU_XORSHIFT_ZERO") == rng.XORSHIFT_ZERO
    assert define("BITMCU_SEED_ROUNDS") == rng.SEED_ROUNDS


def test_check_reads_nothing_past_the_layer_array_when_count_and_end_marker_both_lie(tmp_path):
    """n_layers raised and the end marker overwritten by a real layer: bitmcu_check is bounded
    by the array's compiled length (under ASan, a read past it would abort)."""
    rng = np.random.default_rng(14)
    model = random_model(rng, ["4bitsym", "8bit"])
    header = model_header(model, "test")
    end = "    {.op = 0} /* end of the table */\n"
    start = header.index("    {.op = BITMCU_OP_FC")
    first_row = header[start:header.index("},\n", header.index(".kernel = ", start)) + 3]
    lying = (header.replace(end, first_row)
             .replace(".n_layers = BITMCU_MODEL_N_LAYERS,", ".n_layers = 200u,"))
    assert lying.count("BITMCU_OP_FC") == header.count("BITMCU_OP_FC") + 1
    status = _checked_under_asan(lying, tmp_path)
    assert status == "6"  # BITMCU_ERR_MODEL
    assert _checked_under_asan(header, tmp_path) == "0"


def _checked_under_asan(header: str, where) -> str:
    """bitmcu_check of a model.h, compiled with AddressSanitizer: the status it prints."""
    import subprocess

    from bitmcu.deploy.hostc import SANITIZE, engine_dir, find_cc

    (where / "model.h").write_text(header)
    (where / "main.c").write_text(
        '#include <stdio.h>\n#include "bitmcu.h"\n#include "model.h"\n'
        "int main(void) {\n    printf(\"%d\", (int)bitmcu_check(&bitmcu_model_data, "
        "BITMCU_MODEL_TABLE_ENTRIES, 0u));\n    return 0;\n}\n")
    exe = where / "check"
    subprocess.run([find_cc(None), "-std=c99", *SANITIZE, f"-I{engine_dir()}", f"-I{where}",
                    str(where / "main.c"), str(engine_dir() / "bitmcu.c"), "-o", str(exe)],
                   check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_the_profilers_offset_of_the_checksums_is_the_structs(tmp_path):
    """The emulator reads table_sum and weight_sum at MODEL_SUMS_OFFSET of the model table
    (the fields before them are 32-bit or smaller: the same offset on the host and the chip)."""
    import subprocess

    from bitmcu.deploy.hostc import engine_dir, find_cc
    from bitmcu.target.emulator import MODEL_SUMS_OFFSET

    (tmp_path / "off.c").write_text(
        '#include <stddef.h>\n#include <stdio.h>\n#include "bitmcu.h"\n'
        "int main(void) {\n    printf(\"%d %d\", (int)offsetof(bitmcu_model, table_sum), "
        "(int)offsetof(bitmcu_model, weight_sum));\n    return 0;\n}\n")
    subprocess.run([find_cc(None), "-std=c99", f"-I{engine_dir()}", str(tmp_path / "off.c"),
                    "-o", str(tmp_path / "off")], check=True)
    out = subprocess.run([str(tmp_path / "off")], capture_output=True, text=True).stdout
    assert out == f"{MODEL_SUMS_OFFSET} {MODEL_SUMS_OFFSET + 4}"


def test_compare_c_names_the_first_image_that_differs(monkeypatch):
    """A classifier's C logits against the reference's: a table whose first layer's weights
    differ is caught, naming the image and the logit."""
    from bitmcu.deploy import verify

    rng = np.random.default_rng(12)
    model = random_model(rng, ["4bitsym"])
    other = random_model(np.random.default_rng(13), ["4bitsym"])
    x = random_images(rng, 30, model.n_input)
    monkeypatch.setattr(verify, "model_header", lambda m, cmd: model_header(other, cmd))
    with pytest.raises(BitmcuError, match=r"C engine \(mul\) differs from the reference on "
                                          r"\d+ of 30 images .*first: image \d+, value \d: C -?\d+"):
        compare_c(model, x, builds=(True,))
