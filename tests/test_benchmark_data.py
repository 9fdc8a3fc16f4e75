"""Benchmark layouts (WikiMIA labelled, MIMIR paired) from local fixture files."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memlens.benchmark_data import load_benchmark
from memlens.data import DataError


@pytest.fixture
def wikimia(tmp_path):
    # WikiMIA's layout: "input" text and "label" (1 seen by the model, 0 unseen).
    p = tmp_path / "WikiMIA_length32.parquet"
    pq.write_table(pa.table({"input": ["The 2014 Winter Olympics were held in Sochi.", "The 2023 Turkey earthquake struck in February.",
                                       "Barack Obama was the 44th president."], "label": [1, 0, 1]}), p)
    return p


@pytest.fixture
def mimir(tmp_path):
    # MIMIR's layout: each row pairs a member and a non-member text.
    p = tmp_path / "pile_cc.jsonl"
    rows = [{"member": f"member text {i}", "nonmember": f"other text {i}", "member_neighbors": []} for i in range(4)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_wikimia_preset(wikimia):
    s = load_benchmark(wikimia, "wikimia")
    assert [x.label for x in s] == [1, 0, 1] and s[0].text.startswith("The 2014") and s[1].id == "WikiMIA_length32-1"
    assert [x.label for x in load_benchmark(wikimia, "wikimia", limit=1)] == [1, 0]  # the first member and the first non-member
    assert [x.id for x in load_benchmark(wikimia, "wikimia", limit=2)] == [x.id for x in s]


def test_mimir_preset(mimir):
    s = load_benchmark(mimir, "mimir")
    assert [x.label for x in s] == [1] * 4 + [0] * 4
    assert s[0].text == "member text 0" and s[4].text == "other text 0" and len({x.id for x in s}) == 8


def test_field_mapping_and_bad_field_names(wikimia, tmp_path):
    s = load_benchmark(wikimia, text_field="input")  # no preset: label field "label" by default
    assert len(s) == 3
    with pytest.raises(DataError, match=r"no 'text' field \(fields: input, label\); name the fields with text_field/label_field"):
        load_benchmark(wikimia)
    with pytest.raises(DataError, match="no 'member' field"):
        load_benchmark(wikimia, layout="paired")
    with pytest.raises(DataError, match="unknown benchmark preset 'mia'"):
        load_benchmark(wikimia, "mia")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "x", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match="label 'maybe' is not 1"):  # the same label validation as JSONL input
        load_benchmark(bad, "wikimia")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_benchmark(broken, "wikimia")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"input": "  ", "label": 1}) + "\n")
    with pytest.raises(DataError, match="empty text"):
        load_benchmark(empty, "wikimia")


def test_hub_ids_and_save_to_disk_need_datasets(tmp_path):
    pytest.importorskip("pyarrow")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pip install datasets"):
            load_benchmark("swj0419/WikiMIA", "wikimia", split="WikiMIA_length32")
        with pytest.raises(DataError, match="save_to_disk directory needs"):
            load_benchmark(tmp_path, "wikimia")
    else:
        pytest.skip("datasets is installed; the hub path needs the network")
