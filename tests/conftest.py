import os
from pathlib import Path

import pytest

from bitmcu.data.datasets import cache_dir

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "data" / "mnist_subset.npz"


# the user's cache (where the demo downloads MNIST), read before the tests isolate theirs
USER_DATASETS = cache_dir() / "datasets"


def full_mnist_dir() -> Path | None:
    for d in (os.environ.get("BITMCU_DATA"), ROOT.parent / "shared" / "datasets", USER_DATASETS):
        if d and (Path(d) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return Path(d)
    return None


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["BITMCU_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def restamp(blob: dict) -> dict:
    """A checkpoint blob whose config a test changed, stamped as if trained with it."""
    from bitmcu.train.checkpoint import config_digest

    blob["config_sha256"] = config_digest(blob["config"])
    return blob


def tiny_overrides(**extra) -> list[str]:
    sets = {
        "name": "tiny",
        "data.dataset": str(SUBSET),
        "model.hidden": "[24]",
        "train.epochs": "3",
        "train.batch_size": "32",
        "train.threads": "1",
        "augment.fraction": "0.3",
    }
    sets.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in sets.items()]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small model trained for a few epochs on the committed MNIST subset."""
    from bitmcu.train import train
    from bitmcu.train.config import load_config

    cfg = load_config(None, tiny_overrides())
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train(cfg, run_dir=out, quiet=True)


class FakeMachine:
    """The emulator's clock and error seam, for driving the peripheral models by hand."""

    def __init__(self):
        from bitmcu.target.chips import get_chip

        self.chip = get_chip("ch32v003")
        self.t, self.error = 0.0, None

    def time(self):
        return self.t

    def map_io(self, *a):
        pass

    def wait_until(self, t):
        self.t = max(self.t, t)

    def fail(self, message):
        self.error = self.error or message

    def stop(self):
        pass
