"""Benchmark layouts (WikiMIA labelled, MIMIR paired) from local fixture files."""
from __future__ import annotations

import json
import sys

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


def test_hub_ids_and_save_to_disk_need_datasets(tmp_path, monkeypatch):
    # Without the optional package (a None entry in sys.modules makes the import fail): one line naming it.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="pip install datasets"):
        load_benchmark("swj0419/WikiMIA", "wikimia", split="WikiMIA_length32")
    with pytest.raises(DataError, match="save_to_disk directory needs"):
        load_benchmark(tmp_path, "wikimia")


WIKIMIA_ROWS = {"input": ["The 2014 Winter Olympics were held in Sochi.", "The 2023 Turkey earthquake struck in February.",
                          "Barack Obama was the 44th president.", "The 2024 eclipse crossed North America."], "label": [1, 0, 1, 0]}


def _as_tuples(samples):
    return [(s.id, s.text, s.label) for s in samples]


def test_save_to_disk_wikimia_layout_matches_jsonl(tmp_path):
    datasets = pytest.importorskip("datasets")
    # WikiMIA on the hub: one DatasetDict whose splits are the text lengths, rows "input"/"label".
    d = tmp_path / "WikiMIA"
    datasets.DatasetDict({"WikiMIA_length32": datasets.Dataset.from_dict(WIKIMIA_ROWS),
                          "WikiMIA_length64": datasets.Dataset.from_dict({"input": ["x y z"], "label": [1]})}).save_to_disk(str(d))
    got = load_benchmark(d, "wikimia", split="WikiMIA_length32")
    jsonl = tmp_path / "WikiMIA.jsonl"  # the same rows as a JSONL file: the same samples (ids from the source's name)
    jsonl.write_text("".join(json.dumps({"input": t, "label": y}) + "\n" for t, y in zip(WIKIMIA_ROWS["input"], WIKIMIA_ROWS["label"])))
    assert _as_tuples(got) == _as_tuples(load_benchmark(jsonl, "wikimia"))
    assert [s.label for s in got] == [1, 0, 1, 0] and got[1].id == "WikiMIA-1"
    assert [s.label for s in load_benchmark(d, "wikimia", split="WikiMIA_length32", limit=1)] == [1, 0]
    with pytest.raises(DataError, match=r"holds splits WikiMIA_length32, WikiMIA_length64; choose one with split="):
        load_benchmark(d, "wikimia")
    with pytest.raises(DataError, match=r"no split 'train' \(splits: WikiMIA_length32, WikiMIA_length64\)"):
        load_benchmark(d, "wikimia", split="train")
    # A single Dataset directory needs no split.
    single = tmp_path / "single"
    datasets.Dataset.from_dict(WIKIMIA_ROWS).save_to_disk(str(single))
    assert [s.text for s in load_benchmark(single, "wikimia")] == WIKIMIA_ROWS["input"]


def test_save_to_disk_mimir_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    # MIMIR: per domain, splits named by the n-gram overlap filter; each row a member, a non-member and their neighbours.
    rows = {"member": [f"member text {i}" for i in range(3)], "nonmember": [f"other text {i}" for i in range(3)],
            "member_neighbors": [["n1", "n2"]] * 3, "nonmember_neighbors": [["m1"]] * 3}
    d = tmp_path / "pile_cc"
    datasets.DatasetDict({"ngram_13_0.2": datasets.Dataset.from_dict(rows)}).save_to_disk(str(d))
    got = load_benchmark(d, "mimir", split="ngram_13_0.2")
    assert [s.label for s in got] == [1] * 3 + [0] * 3
    assert got[0].text == "member text 0" and got[3].text == "other text 0" and got[3].id == "pile_cc-nonmember-0"
    assert len(load_benchmark(d, "mimir", split="ngram_13_0.2", limit=2)) == 4


def test_save_to_disk_bad_fields_and_values_are_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "renamed"
    datasets.Dataset.from_dict({"sentence": ["a text", "another text"], "is_member": [1, 0]}).save_to_disk(str(d))
    with pytest.raises(DataError) as e:
        load_benchmark(d, "wikimia")
    assert "\n" not in str(e.value)
    assert str(e.value).endswith("no 'input' field (fields: sentence, is_member); name the fields with text_field/label_field")
    assert [s.label for s in load_benchmark(d, text_field="sentence", label_field="is_member")] == [1, 0]
    with pytest.raises(DataError, match="no 'member' field"):
        load_benchmark(d, "mimir")
    # The same value validation as JSONL input.
    bad = tmp_path / "bad"
    datasets.Dataset.from_dict({"input": ["x", "y"], "label": ["maybe", "1"]}).save_to_disk(str(bad))
    with pytest.raises(DataError, match="label 'maybe' is not 1"):
        load_benchmark(bad, "wikimia")
    empty = tmp_path / "empty"
    datasets.Dataset.from_dict({"input": ["  "], "label": [1]}).save_to_disk(str(empty))
    with pytest.raises(DataError, match="empty text"):
        load_benchmark(empty, "wikimia")
    # A directory that is not a saved dataset: one line from the loader, not a traceback.
    (tmp_path / "notads").mkdir()
    with pytest.raises(DataError, match=r"could not load the dataset") as e:
        load_benchmark(tmp_path / "notads", "wikimia")
    assert "\n" not in str(e.value)
