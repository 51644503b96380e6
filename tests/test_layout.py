"""The package's layout keeps its flow: no import cycles (imports inside functions counted), and
deploying a saved integer model needs no torch."""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _runtime_imports(tree: ast.Module):
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING",
                                                                   "typing.TYPE_CHECKING"):
            skip.update(id(n) for n in ast.walk(node))
    return [n for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def import_graph() -> dict[str, set[str]]:
    """bitmcu module -> the bitmcu modules it imports; importing a.b.c also runs a.b's
    __init__, so each target's packages count too."""
    files = {_module(p): p for p in SRC.joinpath("bitmcu").rglob("*.py")}
    mods = {m for m, _ in files}
    graph = {}
    for (mod, is_pkg), path in files.items():
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                pkg = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]
                               if node.level else [node.module])
                pkg = pkg.rstrip(".")
                names = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg
                         for a in node.names]
            for name in names:
                parts = name.split(".")
                for k in range(1, len(parts) + 1):
                    t = ".".join(parts[:k])
                    if t in mods and t != mod and not mod.startswith(t + "."):
                        targets.add(t)
        graph[mod] = targets
    return graph


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert {"bitmcu.deploy.ir", "bitmcu.train.checkpoint"} <= graph["bitmcu.train.lower"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_a_cycle_is_found():
    """The check sees a cycle that only an import inside a function closes."""
    graph = import_graph()
    graph["bitmcu.deploy.ir"] = graph["bitmcu.deploy.ir"] | {"bitmcu.deploy.export"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_deploy_core_and_quant_import_no_torch():
    graph_mods = ("deploy", "core", "quant")
    for sub in graph_mods:
        for path in SRC.joinpath("bitmcu", sub).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in _runtime_imports(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                inside = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
                          and any(n is node for n in ast.walk(f))]
                training = [f.name for f in inside if f.name in ("quantize_int", "fake_quant")]
                if any(n.split(".")[0] == "torch" for n in names) and not training:
                    pytest.fail(f"{path.relative_to(SRC)}:{node.lineno} imports torch")


NO_TORCH = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, Refuse())
import numpy as np
from bitmcu.deploy import reference
from bitmcu.deploy.export import model_report, read_export, write_export
from bitmcu.deploy.ir import IntModel
from bitmcu.deploy.verify import verify_model, verify_samples

src, out, kind = sys.argv[1:4]
model = IntModel.load(src + "/model.npz")
if kind == "classifier":
    with np.load(src + "/test_set.npz") as f:
        x, y = f["images"], f["labels"]
    write_export(model, out, x, y, model_report(model, "ch32v003"), "ch32v003", 4, "test")
    again = read_export(out, check=True)
    _, pred = reference.run(again, x)
    print(verify_model(again, x, y).text())
else:
    write_export(model, out, np.zeros((1, 32, 32), np.uint8), np.zeros(1, np.int64),
                 model_report(model, "ch32v003"), "ch32v003", 4, "test")
    print(verify_samples(read_export(out, check=True), 12)[0].text())
assert "torch" not in sys.modules
"""


@pytest.mark.parametrize("kind", ["classifier", "decoder"])
def test_a_saved_integer_model_deploys_without_torch(kind, tiny_run, tmp_path):
    """Export, reference and verification of a saved integer model in a process where importing
    torch fails."""
    from bitmcu.apps.pipeline import export
    from bitmcu.train.lower import load_int_model

    src = tmp_path / "src"
    if kind == "classifier":
        export(tiny_run, src)  # model.npz and test_set.npz
    else:
        src.mkdir()
        load_int_model(ROOT / "models" / "die-ch32v003")[0].save(src / "model.npz")
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(src), str(tmp_path / "out"), kind],
                       capture_output=True, text=True, env={**os.environ}, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "equals the numpy reference" in r.stdout or "C logits equal" in r.stdout
    assert (tmp_path / "out" / "model.h").is_file()
