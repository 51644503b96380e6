"""The README's code: the blocks marked ``<!-- test: run -->`` are run as a user would (from an
empty folder), every ``bitmcu`` command line of every block is one the CLI accepts, and the
example search space is one `bitmcu search` accepts."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitmcu.cli import build_parser

from .conftest import ROOT, full_mnist_dir

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"(<!-- test: run -->\n)?```(\w*)\n(.*?)```", re.S)
BLOCKS = [(bool(m.group(1)), m.group(2), m.group(3)) for m in BLOCK.finditer(README)]
BIN = Path(sys.executable).parent  # the environment's bitmcu


def _commands(text: str) -> list[str]:
    """The shell command lines of a block: continuations joined, comments dropped."""
    text = text.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


SHELL = [t for run, lang, t in BLOCKS if run and lang == "sh"]


def test_the_marked_blocks_are_the_ones_that_run():
    marked = [(lang, text) for run, lang, text in BLOCKS if run]
    assert [lang for lang, _ in marked] == ["python", "sh", "sh"]
    assert "bitmcu train decoder-tiny" in SHELL[0] and "bitmcu judge models/" in SHELL[1]


@pytest.mark.parametrize("line", sorted({c for _, lang, text in BLOCKS if lang in ("sh", "")
                                         for part in _commands(text)
                                         for c in part.split("&&")
                                         if c.strip().startswith("bitmcu ")}))
def test_every_bitmcu_line_is_accepted_by_the_cli(line):
    argv = shlex.split(line)[1:]
    build_parser().parse_args(argv)  # an unknown option or a missing argument exits


def test_the_example_search_space_is_accepted(tmp_path):
    from bitmcu.apps.search import load_space

    (text,) = [t for _, lang, t in BLOCKS if lang == "yaml" and "space:" in t]
    (tmp_path / "space.yaml").write_text(text)
    space = load_space(tmp_path / "space.yaml")
    assert space.base == "reference" and len(space.params) == 4 and len(space.trials) == 1


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                    reason="RISC-V cross compiler not installed")
@pytest.mark.parametrize("block", SHELL, ids=["decoder", "judge"])
def test_the_shell_blocks_run(block, tmp_path):
    """From an empty folder that has the checkout's models/ (as the checkout itself has)."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for line in _commands(block):
        r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
        assert r.returncode == 0, (line, r.stderr[-3000:])
    made = {"decoder": "grid.png", "judge": "judge.json"}["decoder" if "decoder-tiny" in block
                                                          else "judge"]
    assert (tmp_path / made).is_file()


@pytest.mark.skipif(full_mnist_dir() is None, reason="full MNIST not available")
@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                    reason="RISC-V cross compiler not installed")
def test_the_python_api_block_runs(tmp_path):
    (block,) = [t for run, lang, t in BLOCKS if run and lang == "python"]
    env = {**os.environ, "BITMCU_DATA": str(full_mnist_dir())}
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"integer accuracy 9\d\.\d\d%", r.stdout), r.stdout
    assert "equal the numpy reference's for every image" in r.stdout
    assert "cycles" in r.stdout and (tmp_path / "runs" / "default" / "checkpoint.pt").is_file()
