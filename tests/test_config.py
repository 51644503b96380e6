import pytest

from bitmcu.core.errors import BitmcuError
from bitmcu.train.config import load_config, named_configs


def test_named_configs_load():
    assert {"default", "reference"} <= set(named_configs())
    cfg = load_config("reference")
    assert cfg.model.hidden == [64, 64, 64]
    assert cfg.model.scheme == "4bitsym"


def test_override_types_are_parsed():
    cfg = load_config(None, ["train.epochs=7", "model.hidden=[32, 16]", "train.lr=0.01",
                             "augment.enabled=false", "train.halve_lr_at=null"])
    assert cfg.train.epochs == 7 and cfg.model.hidden == [32, 16]
    assert cfg.train.lr == 0.01 and cfg.augment.enabled is False


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epoch=3", ["unknown config key 'train.epoch'", "train.epochs"]),
        ("nonsense=1", ["unknown config key 'nonsense'", "model"]),
        ("train.epochs=three", ["train.epochs", "'three'", "not an integer"]),
        ("train.lr=fast", ["train.lr", "not a number"]),
        ("model.scheme=5bit", ["model.scheme", "'5bit'", "4bitsym", "ternary"]),
        ("model.norm=group", ["model.norm", "'group'", "'rms'", "'batch'"]),
        ("model.hidden=[64, 0]", ["model.hidden", "below 1"]),
        ("model.layer_schemes=[null, null, null, binary]", ["layer_schemes", "4 entries", "3"]),
        ("data.size=40", ["data.size", "28"]),
        ("data.crop=12", ["data.crop", "12", "from data.size (16) to 28"]),
        ("model.layer_schemes=[8bit, foo]", ["model.layer_schemes[1]", "'foo'"]),
        ("train", ["expected key=value"]),
        ("train=3", ["'train' is a section"]),
        ("train.dampen=-1", ["train.dampen", "-1"]),
        ("train.sam=-0.1", ["train.sam", "-0.1", ">= 0"]),
        ("augment.shear=60", ["augment.shear", "60", "0..45"]),
        ("train.teacher=[]", ["train.teacher", "empty", "a list of runs"]),
        ("model.family=convnet", ["model.conv[0]", "'dw'", "convnet", "'conv'"]),
        ("model.family=cnn | model.conv=[dw, dw*0]", ["model.conv[1]", "'dw*0'", "'dw*K'"]),
        ("model.family=cnn | model.conv=[dw, pool, dwx2]", ["model.conv[2]", "'dwx2'", "'pool'"]),
        ("model.family=cnn | model.conv=[pool, dw, dw, dw, dw, dw, dw, dw]",
         ["model.conv", "8 stages", "at most 7"]),
        ("model.family=convnet | model.conv=[conv] | model.scheme=ternary",
         ["convnet", "float teacher", "'ternary'", "model.scheme=none"]),
        ("model.family=convnet | model.scheme=none | model.conv=[conv,pool,pool,pool,pool,pool]",
         ["model.conv[5]", "'pool'", "1x1"]),
        ("data.train_limit=-5", ["data.train_limit", "-5", ">= 0"]),
        ("train.gamma=-0.5", ["train.gamma", ">= 0"]),
        ("model.clip_std=-1", ["model.clip_std", ">= 0"]),
        ("augment.translate=-0.1", ["augment.translate", ">= 0"]),
        ("train.lr=.nan", ["train.lr", "finite number"]),
        ("train.kl_weight=.inf", ["train.kl_weight", "finite number"]),
        ("name=/tmp/elsewhere", ["config key 'name'", "not a name", "--out"]),
        ("name=..", ["config key 'name'", "not a name"]),
        ("train.distill_temperature=0", ["train.distill_temperature", "0.0", "> 0"]),
        ("model.act_bits=9", ["model.act_bits", "9", "2..8"]),
        ("model.act_bits=1", ["model.act_bits", "1", "2..8"]),
        ("augment.fraction=2", ["augment.fraction", "2.0", "0..1"]),
        ("train.lr=0", ["train.lr", "0.0", "> 0"]),
        ("data.train_limit=0", ["data.train_limit", "0", ">= 1"]),
        ("train.threads=-2", ["train.threads", "-2", "1..1024", "null"]),
        ("train.threads=0", ["train.threads", "0", "1..1024"]),
        ("train.threads=100000", ["train.threads", "100000", "1..1024"]),
        ("train.label_smoothing=2", ["train.label_smoothing", "2.0", "[0, 1)"]),
        ("train.label_smoothing=1", ["train.label_smoothing", "1.0", "[0, 1)"]),
        ("augment.elastic_sigma=0", ["augment.elastic_sigma", "0.0", "> 0"]),
        ("train.ghost_weight=3", ["train.ghost_weight", "3.0", "model.family decoder only",
                                  "'fc'", "drop the key"]),
        ("model.channels=12", ["model.channels", "12", "cnn and convnet and decoder", "'fc'"]),
        ("model.family=cnn | model.latent=4", ["model.latent", "decoder only", "'cnn'"]),
    ],
)
def test_bad_config_names_key_value_and_allowed(override, words):
    with pytest.raises(BitmcuError) as e:
        load_config(None, override.split(" | "))
    for w in words:
        assert w in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(BitmcuError, match="not valid YAML"):
        load_config(str(p))
    p.write_text("train:\n  epochs: 3\n  optimiser: sgd\n")
    with pytest.raises(BitmcuError, match="unknown config key 'train.optimiser'"):
        load_config(str(p))
    with pytest.raises(BitmcuError, match="not found"):
        load_config("no-such-config")


def test_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 3\nmodel:\n  hidden: [8]\ntrain:\n  lr: 0.01\n")
    with pytest.raises(BitmcuError, match=r"c.yaml: key 'train' appears twice .*lines 1 and 5"):
        load_config(str(p))
    p.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(BitmcuError, match="key 'epochs' appears twice"):
        load_config(str(p))
    p.write_text("train:\n  epochs: 3\nmodel:\n  hidden: [8]\n")  # each key once: loads
    assert load_config(str(p)).train.epochs == 3


def test_cnn_shapes_are_checked():
    from bitmcu.train.shapes import cnn_shapes

    cfg = load_config(None, ["model.family=cnn"])
    assert cnn_shapes(cfg) == [14, 12, 6, 4, 2]
    with pytest.raises(BitmcuError, match=r"model.conv\[4\]': 'dw'.* 2x2"):
        load_config(None, ["model.family=cnn", "model.conv=[dw, pool, dw, pool, dw]"])
    with pytest.raises(BitmcuError, match=r"model.conv\[2\]': 'pool'.* 5x5"):
        load_config(None, ["model.family=cnn", "model.conv=[dw, dw, pool]", "data.size=11"])
    with pytest.raises(BitmcuError, match=r"model.conv\[2\]': 'conv'.*'dw'"):
        load_config(None, ["model.family=cnn", "model.conv=[dw, pool, conv]"])
    with pytest.raises(BitmcuError, match=r"model.conv\[0\]': 'dw'.* 2x2 .* 4x4 input"):
        load_config(None, ["model.family=cnn", "data.size=4", "model.conv=[dw, dw]"])


def test_a_folder_as_config_and_a_section_that_is_a_number_are_refused(tmp_path):
    with pytest.raises(BitmcuError, match="is a folder; give a YAML file"):
        load_config(str(tmp_path))
    (tmp_path / "c.yaml").write_text("model: 5\n")
    with pytest.raises(BitmcuError, match="config key 'model' is a section .*, not 5"):
        load_config(str(tmp_path / "c.yaml"), ["model.hidden=[8]"])


@pytest.mark.parametrize("args", [["verify", "r", "--limit", "0"],
                                  ["export", "r", "--out", "o", "--images", "-1"],
                                  ["sample", "r", "--per-class", "2.5", "--out", "a.png"],
                                  ["firmware", "e", "--mcu", "ch32v003", "--images", "0"],
                                  ["die", "d", "--emulate", "0"]])
def test_counts_below_one_are_one_error_line(args, capsys):
    from bitmcu.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitmcu: error: --") and "whole number >= 1" in err
    assert err.count("\n") == 1
