import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from bitmcu.core.errors import BitmcuError
from bitmcu.train import load_checkpoint, lr_at, model_from_checkpoint, train
from bitmcu.train.config import load_config
from bitmcu.train.runner import _sharpness_aware

from .conftest import restamp, tiny_overrides


def test_tiny_run_learns_and_writes_its_files(tiny_run):
    for f in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "curves.png", "weights.png",
              "first_layer.png"):
        assert (tiny_run / f).is_file(), f
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["test_acc"] > 0.6  # 2,000 training images, 3 epochs (chance: 0.1)
    blob = load_checkpoint(tiny_run)
    assert blob["epoch"] == 3 and blob["cfg"].model.hidden == [24]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "bitmcu.cli", *args], capture_output=True,
                          text=True, **kw)


def test_killed_run_resumes_to_the_same_result(tmp_path):
    sets = [x for s in tiny_overrides(**{"train.epochs": 12}) for x in ("--set", s)]
    ref = tmp_path / "ref"
    assert _cli("train", *sets, "--out", str(ref), "--quiet").returncode == 0

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "bitmcu.cli", "train", *sets, "--out",
                             str(run), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    while proc.poll() is None:  # the event: two epochs done, however busy the machine
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    done = load_checkpoint(run)["epoch"]
    assert proc.returncode == 130 and 2 <= done < 12, (done, err)
    assert b"resume" in err and b"Traceback" not in err

    r = _cli("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(ref), load_checkpoint(run)
    assert b["epoch"] == 12
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [m["test_acc"] for m in a["metrics"]] == [m["test_acc"] for m in b["metrics"]]


def test_resume_refuses_an_edited_config_file(tmp_path):
    """A run folder whose config.yaml was edited: the resume names the keys and changes
    nothing; a key a resume may change, edited in the file, is named with the --set to use."""
    run = _short_run(tmp_path)
    text = (run / "config.yaml").read_text()
    ckpt = (run / "checkpoint.pt").read_bytes()
    (run / "config.yaml").write_text(text.replace("scheme: 4bitsym", "scheme: ternary", 1))
    r = _cli("train", "--resume", str(run), "--quiet")
    assert r.returncode == 2 and "was edited since the run was trained" in r.stderr
    assert "model.scheme: '4bitsym' in the checkpoint, 'ternary' in the file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (run / "checkpoint.pt").read_bytes() == ckpt
    (run / "config.yaml").write_text(text.replace("epochs: 1", "epochs: 2", 1))
    r = _cli("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "sets train.epochs 2, the checkpoint 1: the run keeps 1; give --set train.epochs=2" \
        in r.stdout
    assert "nothing to do" in r.stdout


def _short_run(tmp_path, **extra):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 1, **extra}))
    return train(cfg, run_dir=tmp_path / "run", quiet=True)


def test_resume_changes_only_where_and_how_long(tmp_path):
    """A run trained on a GPU machine continues on a CPU one: train.device (and threads, epochs)
    may change on resume; a key that changes what the run learns is refused, the run untouched."""
    run = _short_run(tmp_path)
    ckpt = run / "checkpoint.pt"
    blob = torch.load(ckpt, weights_only=False)
    blob["config"]["train"]["device"] = "cuda"  # as a run saved on a GPU machine
    torch.save(restamp(blob), ckpt)
    before = ckpt.read_bytes()
    r = _cli("train", "--resume", str(run), "--set", "train.lr=0.1", "--quiet")
    assert r.returncode != 0 and "train.epochs, train.device, train.threads" in r.stderr
    assert "'train.lr'" in r.stderr and "Traceback" not in r.stderr
    assert ckpt.read_bytes() == before
    if not torch.cuda.is_available():
        r = _cli("train", "--resume", str(run), "--set", "train.epochs=2", "--quiet")
        assert r.returncode != 0 and "CUDA is not available" in r.stderr
        assert ckpt.read_bytes() == before
    r = _cli("train", "--resume", str(run), "--set", "train.device=cpu", "--set", "train.epochs=2",
             "--quiet")
    assert r.returncode == 0, r.stderr
    after = load_checkpoint(run)
    assert after["epoch"] == 2 and after["cfg"].train.device == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_moves_the_optimizer_state(tmp_path):
    run = _short_run(tmp_path, **{"train.device": "cuda"})
    train(None, resume=run, epochs=2, quiet=True)
    assert load_checkpoint(run)["epoch"] == 2


def test_existing_run_dir_is_not_overwritten(tiny_run):
    cfg = load_config(None, tiny_overrides())
    with pytest.raises(BitmcuError, match="already holds a run.*--resume"):
        train(cfg, run_dir=tiny_run, quiet=True)


def test_corrupted_and_foreign_checkpoints(tmp_path, tiny_run):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(BitmcuError, match="not a bitmcu checkpoint .*zip archive"):
        load_checkpoint(bad)
    good = (tiny_run / "checkpoint.pt").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated: no Errno 22, no torch advice
    with pytest.raises(BitmcuError, match="truncated") as e:
        load_checkpoint(bad)
    assert "Errno" not in str(e.value)

    class Code:
        def __reduce__(self):
            return (print, ("never run",))

    torch.save({"format": "bitmcu-checkpoint", "x": Code()}, bad)
    with pytest.raises(BitmcuError, match="Python objects other than tensors") as e:
        load_checkpoint(bad)
    assert "weights_only" not in str(e.value) and "trust" not in str(e.value)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(BitmcuError, match="not a bitmcu checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    blob = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    blob["format_version"] = 99
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(BitmcuError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    blob["format_version"] = 1
    blob["model"]["layers.0.weight"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(BitmcuError, match="do not match"):
        model_from_checkpoint(load_checkpoint(tmp_path / "mismatch.pt"))
    raw = (tiny_run / "checkpoint.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BitmcuError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(BitmcuError, match="no checkpoint found"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_with_a_retired_config_key(tmp_path, tiny_run):
    """A run stored with a key removed since loads where the key held the behaviour kept, and
    is refused, naming the key and value, where it held another."""
    blob = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    del blob["config_sha256"]  # written by a version before the config's digest
    blob["config"]["model"]["conv_act_bits"] = 8
    torch.save(blob, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old["cfg"] == load_checkpoint(tiny_run)["cfg"]
    model_from_checkpoint(old)
    blob["config"]["model"]["conv_act_bits"] = 16
    torch.save(blob, tmp_path / "wide.pt")
    with pytest.raises(BitmcuError, match="'model.conv_act_bits' = 16.*retrain"):
        load_checkpoint(tmp_path / "wide.pt")
    blob["config"]["model"].update(conv_act_bits=8, no_such_key=1)
    torch.save(blob, tmp_path / "unknown.pt")
    with pytest.raises(BitmcuError, match="unknown config key 'model.no_such_key'"):
        load_checkpoint(tmp_path / "unknown.pt")


def test_schedules():
    cfg = load_config(None, ["train.epochs=10", "train.lr=1.0"])
    assert lr_at(cfg, 0) == 1.0 and abs(lr_at(cfg, 5) - 0.5) < 1e-9 and lr_at(cfg, 10) < 1e-9
    cfg = load_config(None, ["train.schedule=step", "train.step_size=3", "train.gamma=0.1",
                             "train.lr=1.0"])
    assert lr_at(cfg, 2.9) == 1.0 and abs(lr_at(cfg, 3) - 0.1) < 1e-12
    cfg = load_config(None, ["train.schedule=cosine_restarts", "train.restart_period=4",
                             "train.lr=1.0", "train.halve_lr_at=6"])
    assert lr_at(cfg, 4) == 1.0 and abs(lr_at(cfg, 6) - 0.25) < 1e-9


@pytest.mark.parametrize("sets", [
    {"model.scheme": "ternary", "model.norm": "layer", "model.scale": "per_channel",
     "train.sam": "0.05"},
    {"model.scheme": "none", "model.norm": "batch", "train.optimizer": "adam",
     "train.schedule": "step"},
    {"model.scheme": "fp130", "model.clip": "std", "model.layer_schemes": "[8bit, nf4]",
     "augment.elastic": "2.0", "train.dampen": "0.5"},
    {"model.family": "cnn", "model.channels": "6", "model.conv_scheme": "8bit",
     "model.bias_unit": "true", "train.lr": "0.01", "data.train_limit": "2000",
     "model.quant_from": "1"},
])
def test_variants_train(tmp_path, sets):
    base = {"train.epochs": 2, "model.hidden": "[16]", "data.train_limit": 800}
    cfg = load_config(None, tiny_overrides(**{**base, **sets}))
    run = train(cfg, run_dir=tmp_path / "r", quiet=True)
    m = load_checkpoint(run)["metrics"]
    assert m[1]["train_loss"] < m[0]["train_loss"] and m[1]["test_acc"] > 0.2


def test_sharpness_aware_step_uses_the_gradient_at_the_perturbed_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def objective():
        out = model(x)
        return out, torch.nn.functional.cross_entropy(out, y)

    before = [p.detach().clone() for p in model.parameters()]
    objective()[1].backward()
    g = [p.grad.clone() for p in model.parameters()]
    rho = 0.3
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    with torch.no_grad():  # expected: the plain gradient at w + rho g / |g|
        for p, gi in zip(model.parameters(), g, strict=True):
            p.add_(gi * rho / norm)
    opt.zero_grad()
    objective()[1].backward()
    want = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        for p, b in zip(model.parameters(), before, strict=True):
            p.copy_(b)
    opt.zero_grad()
    objective()[1].backward()
    _sharpness_aware(model, opt, objective, rho)
    for p, b, w, gi in zip(model.parameters(), before, want, g, strict=True):
        assert torch.allclose(p, b, atol=1e-7)  # weights restored
        assert torch.allclose(p.grad, w, atol=1e-6) and not torch.allclose(p.grad, gi)


def test_float_warm_up_then_quantized(tmp_path):
    sets = tiny_overrides(**{"train.epochs": 2, "data.train_limit": 800})
    plain = load_checkpoint(train(load_config(None, sets), run_dir=tmp_path / "a", quiet=True))
    warm = train(load_config(None, sets + ["model.quant_from=1"]), run_dir=tmp_path / "b",
                 quiet=True)
    blob = load_checkpoint(warm)
    assert blob["metrics"][0]["train_loss"] != plain["metrics"][0]["train_loss"]
    model = model_from_checkpoint(blob)
    layer = model.layers[0]
    x = torch.rand(4, layer.in_features)
    assert layer.quantize  # what is delivered is quantized
    q = layer(x)
    layer.quantize = False
    f = layer(x)
    assert torch.allclose(f, torch.nn.functional.linear(x, layer.latent_weight()))
    assert not torch.allclose(f, q)
    with pytest.raises(BitmcuError, match="model.quant_from.*2.*below train.epochs"):
        load_config(None, sets + ["model.quant_from=2"])


def test_cli_errors_are_one_line(tmp_path, tiny_run):
    r = _cli("train", "--set", "train.epochz=3")
    assert r.returncode == 2 and r.stderr.startswith("bitmcu: error: unknown config key")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "x.pt").write_bytes(b"junk")
    r = _cli("info", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and "not a bitmcu checkpoint" in r.stderr
    r = _cli("info", str(tiny_run))
    assert r.returncode == 0 and "total weight bytes" in r.stdout and "4bitsym" in r.stdout
    r = _cli("eval", str(tiny_run))
    assert r.returncode == 0 and "test accuracy" in r.stdout and "confusion" in r.stdout
    assert (tiny_run / "confusion.png").is_file()
    for cmd in ("train", "eval", "info", "export", "verify", "schemes"):
        assert _cli(cmd, "--help").returncode == 0


def test_distillation_from_a_teacher_run(tiny_run, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 2, "data.train_limit": 800,
                                              "train.teacher": str(tiny_run),
                                              "train.distill": 0.7}))
    run = train(cfg, run_dir=tmp_path / "student", quiet=True)
    m = load_checkpoint(run)["metrics"]
    assert m[1]["train_loss"] < m[0]["train_loss"] and m[1]["test_acc"] > 0.2
    bad = load_config(None, tiny_overrides(**{"train.teacher": str(tiny_run), "data.size": 12}))
    with pytest.raises(BitmcuError, match="train.teacher.*16x16.*12x12"):
        train(bad, run_dir=tmp_path / "bad", quiet=True)
    bad = load_config(None, tiny_overrides(**{"train.teacher": f"[{tiny_run}, {run}]",
                                              "data.size": 12}))
    with pytest.raises(BitmcuError, match=f"train.teacher {tiny_run}: .*16x16.*12x12"):
        train(bad, run_dir=tmp_path / "bad-ensemble", quiet=True)
    bad = load_config(None, tiny_overrides(**{"train.teacher": str(tiny_run),
                                              "data.resize": "bilinear"}))
    with pytest.raises(BitmcuError, match=r"train.teacher.*: area downscaling.*: bilinear down"):
        train(bad, run_dir=tmp_path / "bad2", quiet=True)
    bad = load_config(None, tiny_overrides(**{"train.teacher": str(tiny_run), "data.crop": 16}))
    with pytest.raises(BitmcuError, match=r"area downscaling of the whole source image; .*area "
                                          r"downscaling of the central 16x16 of the source"):
        train(bad, run_dir=tmp_path / "bad3", quiet=True)
    bad = load_config(None, tiny_overrides(**{"train.teacher": f"[{tiny_run}, {tmp_path / 'no'}]"}))
    with pytest.raises(BitmcuError, match=r"'train.teacher': .*no: no checkpoint found.*train the "
                                          r"teacher first"):
        train(bad, run_dir=tmp_path / "bad4", quiet=True)
    assert not (tmp_path / "bad4").exists()


def test_an_ensemble_teacher_averages_its_members_logits(tiny_run):
    from bitmcu.train.runner import Teacher, load_data

    blob = load_checkpoint(tiny_run)
    data = load_data(blob["cfg"])
    one = model_from_checkpoint(blob)
    zero = model_from_checkpoint(blob)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    x = data.train_x[:50]
    idx = torch.arange(50)
    aug = torch.zeros(50, dtype=torch.bool)
    aug[::3] = True
    single = Teacher([one], x, "cpu").logits(idx, x.flip(-1), aug)
    pair = Teacher([one, one], x, "cpu").logits(idx, x.flip(-1), aug)
    with torch.no_grad():
        assert torch.allclose(pair, single)
        assert torch.allclose(single[aug], one(x.flip(-1)[aug]))
        mixed = Teacher([one, zero], x, "cpu").logits(idx, x, None)
        assert torch.allclose(mixed, (one(x) + zero(x)) / 2, atol=1e-5)


def test_weight_average_resumes_exactly_and_is_what_the_run_delivers(tmp_path):
    sets = tiny_overrides(**{"train.epochs": 4, "train.ema": 0.99, "augment.until": 2,
                             "train.schedule": "constant", "data.train_limit": 800})
    ref = train(load_config(None, sets), run_dir=tmp_path / "ref", quiet=True)
    half = load_config(None, sets + ["train.epochs=2"])
    run = train(half, run_dir=tmp_path / "run", quiet=True)
    train(None, resume=run, epochs=4, quiet=True)
    a, b = load_checkpoint(ref), load_checkpoint(run)
    for key in ("model", "live"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    # the delivered model is the average, not the optimizer's last weights
    assert not torch.equal(a["model"]["layers.0.weight"], a["live"]["layers.0.weight"])
    live = model_from_checkpoint(a, live=True)
    assert torch.equal(live.state_dict()["layers.0.weight"], a["live"]["layers.0.weight"])
    with pytest.raises(BitmcuError, match="train.ema.*must be in"):
        load_config(None, ["train.ema=1.0"])


def test_a_convnet_teacher_trains_teaches_a_cnn_and_refuses_export(tmp_path):
    """The float convnet family mixes channels; it trains, distills into a deployable cnn, and
    export names why it cannot be exported."""
    from bitmcu.train.lower import lower

    cfg = load_config("teacher-convnet", tiny_overrides(**{
        "model.channels": 4, "model.conv": "[conv, pool, conv, pool]", "model.hidden": "[16]",
        "train.epochs": 2, "data.train_limit": 800, "data.resize": "area"}))
    teacher = train(cfg, run_dir=tmp_path / "teacher", quiet=True)
    blob = load_checkpoint(teacher)
    model = model_from_checkpoint(blob)
    assert [n for n, _ in model.weight_layers()] == ["conv1", "conv2", "fc0", "fc1"]
    assert model.n_features == 8 * 4 * 4
    assert blob["metrics"][-1]["test_acc"] > 0.3
    with pytest.raises(BitmcuError, match="convnet is a float teacher and cannot be exported"):
        lower(blob)
    student = load_config("cnn-ch32v002", tiny_overrides(**{
        "model.channels": 4, "model.hidden": "[8]", "train.epochs": 1, "data.train_limit": 400,
        "data.resize": "area", "train.teacher": str(teacher), "train.distill": 0.9}))
    run = train(student, run_dir=tmp_path / "student", quiet=True)
    assert lower(load_checkpoint(run)).front  # the student exports


def test_a_shipped_model_without_optimizer_state_is_not_resumed(tmp_path):
    """A checkpoint shipped without its optimizer cannot continue as the same run: one clear
    error naming the way to a new run, and nothing written."""
    import shutil

    from bitmcu.core.errors import BitmcuError

    from .conftest import ROOT

    run = tmp_path / "reference"
    shutil.copytree(ROOT / "models" / "reference", run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(BitmcuError, match="holds no optimizer state.*bitmcu train .*config.yaml"):
        train(None, resume=run, epochs=151, quiet=True)
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("key, value, msg", [
    ("n_classes", "10", "'n_classes' must be a whole number >= 1"),
    ("epoch", 2.5, "'epoch' must be a whole number >= 0"),
    ("epoch", -1, "'epoch' must be a whole number >= 0"),
    ("metrics", {"a": 1}, "'metrics' must be a list"),
    ("metrics", [1, 2], "'metrics' must be a list of per-epoch records"),
    ("config", [1], "'config' must be a mapping"),
    ("model", None, "'model' must be a state dict"),
])
def test_checkpoint_metadata_of_the_wrong_type_is_one_clear_error(tmp_path, tiny_run, key,
                                                                   value, msg):
    blob = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    blob[key] = value
    torch.save(blob, tmp_path / "c.pt")
    with pytest.raises(BitmcuError, match=msg):
        load_checkpoint(tmp_path / "c.pt")
