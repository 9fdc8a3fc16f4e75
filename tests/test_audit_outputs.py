"""AuditResult.save at scale: token_scores.parquet written in row groups, same rows as the per-text arrays."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from memlens.report._synthetic import synthetic_result


def test_token_scores_are_written_in_row_groups_with_every_text(tmp_path):
    r = synthetic_result(23, (0, 40), seed=2)  # some texts with no tokens at all
    r.samples[4].label = None
    r._save_tokens(tmp_path / "t.parquet", rows_per_group=5)
    f = pq.ParquetFile(tmp_path / "t.parquet")
    assert f.metadata.num_row_groups == 5 and [f.metadata.row_group(i).num_rows for i in range(5)] == [5, 5, 5, 5, 3]
    rows = f.read().to_pylist()
    assert [row["id"] for row in rows] == [s.id for s in r.samples]
    assert rows[4]["label"] is None and rows[0]["label"] == r.samples[0].label
    for i, row in enumerate(rows):
        st = r.target_stats[i]
        assert row["tokens"] == r.token_strings[i]
        np.testing.assert_array_equal(row["span_start"], st.span_start)
        np.testing.assert_array_equal(row["token_ids"], st.token_ids)
        np.testing.assert_array_equal(np.float32(row["target_logprob"]), st.logprob.astype(np.float32))
        np.testing.assert_array_equal(np.float32(row["reference_logprob"]), r.reference_logprobs[i].astype(np.float32))
        for attack, toks in r.token_scores.items():
            np.testing.assert_array_equal(np.float32(row[f"{attack}_token"]), np.asarray(toks[i], dtype=np.float32))


def test_token_strings_made_when_asked_for_are_written_from_bytes_with_dictionaries_where_values_repeat(tmp_path):
    from memlens.tokens import TokenStrings, token_strings

    r = synthetic_result(23, (0, 40), seed=3)
    r.token_strings = TokenStrings([s.text for s in r.samples], [st.span_start for st in r.target_stats],
                                   [st.span_end for st in r.target_stats])
    r._save_tokens(tmp_path / "t.parquet", rows_per_group=5)
    f = pq.ParquetFile(tmp_path / "t.parquet")
    rows = f.read().to_pylist()
    for s, st, row in zip(r.samples, r.target_stats, rows):
        assert row["tokens"] == token_strings(s.text, st.span_start, st.span_end)
    md = f.metadata.row_group(0)
    enc = {md.column(i).path_in_schema.split(".")[0]: md.column(i).encodings for i in range(md.num_columns)}
    assert "RLE_DICTIONARY" in enc["tokens"] and "RLE_DICTIONARY" in enc["token_ids"]
    assert "RLE_DICTIONARY" not in enc["target_logprob"] and "RLE_DICTIONARY" not in enc["span_start"]
