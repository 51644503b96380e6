import re

import numpy as np
import pytest
import torch

from bitmcu.core.errors import BitmcuError
from bitmcu.deploy.hostc import engine_dir
from bitmcu.quant import REGISTRY, get_scheme
from bitmcu.quant.schemes import Scheme
from bitmcu.train.clip import octav_clip

QUANT = [s for s in REGISTRY.values() if s.exportable]


def test_registry_ids_match_c_enum():
    header = (engine_dir() / "bitmcu.h").read_text()
    enum = dict(re.findall(r"BITMCU_SCHEME_(\w+) = (\d+)", header))
    assert {name: int(v) for name, v in enum.items()} == {
        s.name.upper(): s.id for s in QUANT
    }
    for s in QUANT:
        assert f"void bitmcu_{s.c_kernel}(" in header


def test_unknown_scheme_lists_allowed():
    with pytest.raises(BitmcuError, match="unknown weight scheme '3bit'.*'4bitsym'"):
        get_scheme("3bit")


@pytest.mark.parametrize("sch", QUANT, ids=lambda s: s.name)
def test_quantize_gives_levels_and_pack_roundtrips(sch: type[Scheme]):
    g = torch.Generator().manual_seed(sch.id)
    w = torch.randn(13, 37, generator=g)
    step = octav_clip(w, np.log2(sch.n_levels())) / sch.max_level()
    q = sch.quantize_int(w, step)
    assert set(q.unique().tolist()) <= set(sch.levels)
    q = q.to(torch.int32).numpy()
    packed = sch.pack(q)
    assert packed.dtype == np.uint8 and packed.shape == sch.packed_shape(13, 37)
    np.testing.assert_array_equal(sch.unpack(packed, 13, 37), q)
    # every level survives packing
    lv = np.array(sch.levels, dtype=np.int32)[None, :]
    np.testing.assert_array_equal(sch.unpack(sch.pack(lv), 1, lv.shape[1]), lv)


@pytest.mark.parametrize("sch", QUANT, ids=lambda s: s.name)
def test_fake_quant_is_straight_through(sch):
    w = torch.randn(8, 16, requires_grad=True)
    step = torch.tensor(0.1)
    y = sch.fake_quant(w, step)
    r = torch.randn(8, 16)
    (y * r).sum().backward()
    expect = r - r.mean(dim=1, keepdim=True) if sch.centered else r
    assert torch.allclose(w.grad, expect, atol=1e-6)
    assert not torch.equal(y.detach(), w.detach())


def test_ternary_density_and_nearest_level():
    t = get_scheme("ternary")
    assert t.row_bytes(10) == 2  # 10 trits in 16 bits
    q = t.quantize_int(torch.tensor([-0.9, -0.4, 0.0, 0.3, 0.6, 5.0]), torch.tensor(1.0))
    assert q.tolist() == [-1, 0, 0, 0, 1, 1]
    fp = get_scheme("fp130")
    q = fp.quantize_int(torch.tensor([0.2, -2.7, 2.9, 1000.0]), torch.tensor(1.0))
    assert q.tolist() == [1, -2, 4, 128]  # log-domain: 2.83 splits 2 and 4


def test_octav_beats_max_clipping():
    w = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    sch = get_scheme("4bitsym")

    def mse(clip):
        step = clip / sch.max_level()
        return ((sch.quantize_int(w, step) * step - w) ** 2).mean().item()

    c = octav_clip(w, 4)
    assert 1.5 < c.item() < 4.0
    assert mse(c) < mse(w.abs().max())
    per = octav_clip(w.reshape(40, 500), 4, dim=0)
    assert per.shape == (40,)


def test_bad_level_is_refused_at_packing():
    with pytest.raises(BitmcuError, match="not a level of scheme 4bitsym"):
        get_scheme("4bitsym").pack(np.array([[2, 3]]))


def test_c_nf4_table_matches_the_scheme():
    src = (engine_dir() / "bitmcu.c").read_text()
    mags = [int(v) for v in re.search(r"nf4_mag\[16\] = \{([^}]*)\}", src).group(1).split(",")]
    levels = get_scheme("nf4").levels
    assert mags == [abs(v) for v in levels]
    assert [i for i, v in enumerate(levels) if v < 0] == list(range(7))  # codes 0..6 negative


@pytest.mark.parametrize("shift", [0, 1, 5])
def test_conv_requant_value_and_gradient(shift):
    """The one-pass requantization equals the engine rule (relu, round half up by the shift,
    clamp to 255) and passes relu(v) / 2^shift's gradient straight through."""
    from bitmcu.train.models import requant

    acc = torch.randint(-3000, 12000, (4, 3, 7, 5)).float()
    acc[0, 0, 0, :3] = torch.tensor([0.0, 1.0, -1.0])
    x = acc.clone().requires_grad_()
    out = requant(x, shift)
    v = acc.long().clamp_min(0)
    expect = ((v + ((1 << shift) >> 1)) >> shift).clamp_max(255)
    assert torch.equal(out.long(), expect)
    g = torch.randn_like(acc)
    out.backward(g)
    assert torch.equal(x.grad, g * (acc > 0) / (1 << shift))


@pytest.mark.parametrize("side", [12, 7])
def test_maxpool_without_gradients_equals_max_pool2d(side):
    from bitmcu.train.models import MaxPool2x2

    x = torch.randint(0, 256, (3, 4, side, side)).float()
    pool = MaxPool2x2()
    with torch.no_grad():
        fast = pool(x)
    assert torch.equal(fast, torch.nn.functional.max_pool2d(x, 2))
    y = x.clone().requires_grad_()
    assert torch.equal(pool(y), fast)  # with gradients: max_pool2d itself


def test_conv_sees_every_change_of_its_shift():
    """The conv layer keeps its shift as a Python int between changes (no GPU read-back per
    step); calibration-style fills, loading and inference-mode models must all be seen."""
    from bitmcu.train.models import QuantConv2d, requant

    torch.manual_seed(0)
    conv = QuantConv2d(1, 4, "8bit")
    x = torch.randint(0, 256, (2, 1, 10, 10)).float()
    for shift in (2, 6, 0):
        conv.shift.fill_(shift)
        assert torch.equal(conv(x), requant(conv.accumulate(x), shift))
    conv.load_state_dict({**conv.state_dict(), "shift": torch.tensor(4)})
    assert conv.shift_value() == 4 and torch.equal(conv(x), requant(conv.accumulate(x), 4))
    with torch.inference_mode():
        frozen = QuantConv2d(1, 4, "8bit")
        frozen.shift.fill_(3)
        assert frozen.shift_value() == 3
