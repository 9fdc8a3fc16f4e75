"""The README's result tables are what benchmarks/readme_tables.py renders from the committed result files."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["readme_tables"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_readme_tables_match_their_result_files(tables):
    new, changed = tables.update((ROOT / "README.md").read_text())
    assert changed == [], f"README tables out of date: {changed}; run python benchmarks/readme_tables.py"


def test_a_hand_edited_number_is_caught_and_rewritten(tables, tmp_path):
    text = (ROOT / "README.md").read_text()
    edited = text.replace("| loss | 0.932", "| loss | 0.945", 1)
    assert edited != text
    readme = tmp_path / "README.md"
    readme.write_text(edited)
    assert tables.main(["--check", "--readme", str(readme)]) == 1
    assert tables.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == text


def test_every_result_file_of_a_table_records_commit_and_machine(tables):
    import json

    for t in tables.TABLES.values():
        p = tables.provenance(json.loads((ROOT / "benchmarks" / t.file).read_text()))
        assert p["machine"] and "commit" in p
    with pytest.raises(ValueError):
        tables.provenance({"demo": {}})
