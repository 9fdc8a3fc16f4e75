"""Loading texts from every supported format, and clear errors for bad inputs."""
from __future__ import annotations

import json

import pytest

from memlens.data import DataError, Sample, as_samples, check_labels, check_unique_ids, gather_audit_samples, load_samples


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


RECORDS = [
    {"id": "a", "text": "first text ✓", "label": 1, "tier": 3},
    {"id": "b", "text": "second, with \"quotes\"\nand a newline", "label": 0, "tier": 1},
    {"id": "c", "text": "third", "label": "member"},
]


def check_loaded(samples):
    assert [s.id for s in samples] == ["a", "b", "c"]
    assert [s.text for s in samples] == [r["text"] for r in RECORDS]
    assert [s.label for s in samples] == [1, 0, 1]


def test_jsonl(tmp_path):
    samples = load_samples(write_jsonl(tmp_path / "x.jsonl", RECORDS))
    check_loaded(samples)
    assert samples[0].meta == {"tier": 3}


def test_jsonl_skips_blank_lines_and_reports_bad_line(tmp_path):
    p = tmp_path / "x.ndjson"
    p.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert [s.text for s in load_samples(p)] == ["a", "b"]
    p.write_text('{"text": "a"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"x.ndjson:2: invalid JSON"):
        load_samples(p)
    p.write_text('["a list"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="JSON object"):
        load_samples(p)


def test_json_list(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps(RECORDS), encoding="utf-8")
    check_loaded(load_samples(p))
    p.write_text(json.dumps({"text": "not a list"}), encoding="utf-8")
    with pytest.raises(DataError, match="list of objects"):
        load_samples(p)


def test_csv_and_tsv(tmp_path):
    import csv

    for suffix, delim in ((".csv", ","), (".tsv", "\t")):
        p = tmp_path / f"x{suffix}"
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text", "label", "tier"], delimiter=delim)
            w.writeheader()
            for r in RECORDS:
                w.writerow({k: r.get(k, "") for k in ("id", "text", "label", "tier")})
        samples = load_samples(p)
        check_loaded(samples)
        assert samples[0].meta == {"tier": "3"}


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [r["text"] for r in RECORDS], "label": [1, 0, 1]}), p)
    check_loaded(load_samples(p))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet"):
        load_samples(bad)


def test_parquet_null_label_uses_default(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [None, 0.0]}), p)
    samples = load_samples(p, default_label=0)
    assert [s.label for s in samples] == [0, 0]
    assert [s.id for s in samples] == ["x-0", "x-1"]


def test_txt_one_text_per_line(tmp_path):
    p = tmp_path / "lines.txt"
    p.write_text("one\ntwo ✓\nthree\n", encoding="utf-8")
    samples = load_samples(p, default_label=1)
    assert [s.text for s in samples] == ["one", "two ✓", "three"]
    assert [s.id for s in samples] == ["lines-0", "lines-1", "lines-2"]
    assert {s.label for s in samples} == {1}
    assert [s.id for s in load_samples(p, id_prefix="m")] == ["m-0", "m-1", "m-2"]


def test_directory_of_txt(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "b.txt").write_text("second\nfile, two lines", encoding="utf-8")
    (d / "a.txt").write_text("first file", encoding="utf-8")
    (d / "ignored.md").write_text("not a text file", encoding="utf-8")
    samples = load_samples(d)
    assert [(s.id, s.text) for s in samples] == [("a", "first file"), ("b", "second\nfile, two lines")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        load_samples(empty)


def test_custom_fields(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"doc": "hello", "key": 7, "member": 0}])
    (s,) = load_samples(p, text_field="doc", id_field="key", label_field="member")
    assert (s.id, s.text, s.label, s.meta) == ("7", "hello", 0, {})


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_samples(tmp_path / "nope.jsonl")


def test_unknown_extension(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_bytes(b"PK")
    with pytest.raises(DataError, match=r"unknown file type '.xlsx'"):
        load_samples(p)


def test_no_text_field(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"body": "hello", "id": 1}])
    with pytest.raises(DataError, match=r"no 'text' field \(fields: body, id\).*--text-field"):
        load_samples(p)


def test_text_not_a_string(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok"}, {"text": 12}])
    with pytest.raises(DataError, match="record 2: 'text' is int"):
        load_samples(p)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text(tmp_path, text):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok"}, {"text": text}])
    with pytest.raises(DataError, match="record 2: empty text"):
        load_samples(p)
    with pytest.raises(DataError, match="empty text"):
        as_samples(["fine", text])


def test_empty_file(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no records"):
        load_samples(p)


def test_non_utf8(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*convert it to UTF-8"):
        load_samples(p)
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="a.txt: not UTF-8"):
        load_samples(d)


@pytest.mark.parametrize("label", [2, -1, "yes please", 0.5, [1]])
def test_invalid_labels(tmp_path, label):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": label}])
    with pytest.raises(DataError, match="is not 1 \\(member\\) or 0 \\(non-member\\)"):
        load_samples(p)


@pytest.mark.parametrize("label,want", [
    (1, 1), (0, 0), (1.0, 1), (True, 1), (False, 0), ("1", 1), ("0", 0), ("member", 1), ("Non-Member", 0),
    ("nonmember", 0), (" TRUE ", 1), ("false", 0), (None, None), ("", None),
])
def test_valid_labels(tmp_path, label, want):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": label}])
    assert load_samples(p)[0].label == want


def test_duplicate_ids(tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", [{"id": "x", "text": "a"}, {"id": "y", "text": "b"}])
    n = write_jsonl(tmp_path / "n.jsonl", [{"id": "x", "text": "c"}])
    with pytest.raises(DataError, match="duplicate ids among the texts: x"):
        gather_audit_samples(members=m, nonmembers=n)
    with pytest.raises(DataError, match="duplicate ids among the population"):
        check_unique_ids([Sample("p", "a"), Sample("p", "b")], "population texts")


def test_gather_members_and_nonmembers(tmp_path):
    m = tmp_path / "members.txt"
    m.write_text("a\nb\n", encoding="utf-8")
    samples = gather_audit_samples(members=m, nonmembers=["c", "d"])
    assert [(s.id, s.label) for s in samples] == [("members-0", 1), ("members-1", 1), ("nonmembers-0", 0), ("nonmembers-1", 0)]
    check_labels(samples)
    with pytest.raises(DataError, match="no texts to audit"):
        gather_audit_samples()


def test_label_field_conflicting_with_the_file_is_an_error(tmp_path):
    # the --members file decides; a label field saying otherwise used to override it silently (issue 12)
    m = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": 0}, {"text": "b"}])
    with pytest.raises(DataError, match="m.jsonl: text 'm-0' has label 0, but it was given as members"):
        gather_audit_samples(members=m)


def test_check_labels_single_class_and_missing():
    with pytest.raises(DataError, match="all 2 labelled texts are members"):
        check_labels([Sample("a", "x", 1), Sample("b", "y", 1)])
    with pytest.raises(DataError, match="are non-members"):
        check_labels([Sample("a", "x", 0)])
    with pytest.raises(DataError, match="1 texts have no label \\(e.g. b\\)"):
        check_labels([Sample("a", "x", 1), Sample("b", "y", None)])
    check_labels([Sample("a", "x", 1), Sample("b", "y", 0)])


def test_as_samples_python_inputs():
    out = as_samples([{"text": "a", "label": 0, "id": "k", "tier": 2}, "b", Sample("s", "c", None, {"z": 1})],
                     default_label=0, name="data")
    assert [(s.id, s.text, s.label) for s in out] == [("k", "a", 0), ("data-1", "b", 0), ("s", "c", 0)]
    with pytest.raises(DataError, match="data: text 'k' has label 1, but it was given as non-members"):
        as_samples([{"text": "a", "label": 1, "id": "k"}], default_label=0, name="data")
    assert out[0].meta == {"tier": 2}
    assert as_samples(None) == []
    with pytest.raises(DataError, match="expected a string, dict or Sample"):
        as_samples([3])
    with pytest.raises(DataError, match="no text string"):
        as_samples([{"body": "x"}])


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: it must not end up in the first column name or text."""
    p = tmp_path / "x.csv"
    p.write_bytes("text,label\nhello,1\nworld,0\n".encode("utf-8-sig"))
    assert [(s.text, s.label) for s in load_samples(p)] == [("hello", 1), ("world", 0)]
    t = tmp_path / "x.txt"
    t.write_bytes("first\nsecond\n".encode("utf-8-sig"))
    assert [s.text for s in load_samples(t)] == ["first", "second"]
    j = tmp_path / "x.jsonl"
    j.write_bytes('{"text": "a"}\n'.encode("utf-8-sig"))
    assert load_samples(j)[0].text == "a"
