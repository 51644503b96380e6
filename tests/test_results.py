"""benchmarks/RESULTS.md and README.md open with today's figures: their generated tables are
what benchmarks/current.py makes at HEAD, and every recorded figure names a section that exists."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("current", ROOT / "benchmarks" / "current.py")
current = importlib.util.module_from_spec(spec)
spec.loader.exec_module(current)


@pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                    reason="RISC-V cross compiler not installed")
def test_the_current_tables_are_what_head_generates(tmp_path):
    for path, text in current.generate(tmp_path).items():
        assert path.read_text() == text, (f"{path.name}: the current table is stale; run "
                                          "python benchmarks/current.py")


def test_results_open_with_the_current_table():
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    first = re.search(r"^## .*$", text, re.M).group(0)
    assert first == "## Today's figures"
    assert text.index("<!-- current: results -->") < text.index("## History")


def test_every_config_has_recorded_figures_whose_section_exists():
    figures = yaml.safe_load((ROOT / "benchmarks" / "figures.yaml").read_text())
    headings = set(re.findall(r"^#+ (.*)$", (ROOT / "benchmarks" / "RESULTS.md").read_text(),
                              re.M))
    configs = {p.stem for p in (ROOT / "src" / "bitmcu" / "configs").glob("*.yaml")}
    assert configs == set(figures)
    for name, rec in figures.items():
        assert ("chips" in rec) != ("role" in rec), name
        if "chips" in rec:
            assert rec["section"] in headings, f"{name}: no section {rec['section']!r}"


def test_a_changed_figure_changes_the_table(tmp_path):
    models = current.shipped()
    figures = yaml.safe_load((ROOT / "benchmarks" / "figures.yaml").read_text())
    before = current.readme_block(models, figures)
    models[0]["firmware"][0]["cycles"] += 1
    assert current.readme_block(models, figures) != before
