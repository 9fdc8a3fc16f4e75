"""`memlens show` reads one text: its scores row, its texts.jsonl record and its token_scores.parquet
row group, with the colour scale saved by the audit (or, for older outputs, computed from one column)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from memlens.data import DataError
from memlens.report.html import _slider, load_one, load_saved, saved_colour_scale


@pytest.fixture(scope="module")
def grouped_dir(tmp_path_factory):
    from memlens.report._synthetic import synthetic_result

    result = synthetic_result(300, (5, 60), seed=4, n_bootstrap=0)
    out = tmp_path_factory.mktemp("grouped")
    result.save(out)
    result._save_tokens(out / "token_scores.parquet", rows_per_group=64)  # 5 row groups
    (out / "manifest.json").unlink()  # the token file was rewritten: read the set as an older, manifest-less output
    return out


def _nan_free(rows):
    return [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()} for r in rows]


def test_load_one_gives_the_rows_load_saved_gives(grouped_dir):
    full = load_saved(grouped_dir)
    for tid in ("t0000", "t0063", "t0064", "t0200", "t0299"):  # first, group edges, last
        one = load_one(grouped_dir, tid)
        assert _nan_free(one.scores) == _nan_free([r for r in full.scores if r["id"] == tid])
        assert one.texts[tid] == full.texts[tid]
        assert list(one.tokens) == [tid]
        for k, v in full.tokens[tid].items():
            np.testing.assert_array_equal(one.tokens[tid][k], v)
        assert one.tokens.token_strings(tid) == full.tokens.token_strings(tid)
    with pytest.raises(DataError, match="no text with id"):
        load_one(grouped_dir, "t9999")


def test_colour_scale_from_one_column_equals_the_reports(grouped_dir):
    full = load_saved(grouped_dir)
    for attack in full.token_attacks():
        expected = _slider([np.asarray(r[f"{attack}_token"], dtype=np.float64) for r in full.tokens.values()], 1.0)["scale"]
        assert saved_colour_scale(grouped_dir, {}, attack) == expected
        assert saved_colour_scale(grouped_dir, {"token_scales": {attack: 2.5}}, attack) == 2.5  # the saved one wins


def test_audit_saves_the_colour_scale_show_would_compute(gpt2, gpt2_ref, tokenizer, corpus, tmp_path):
    import memlens

    res = memlens.audit(gpt2.model, gpt2_ref.model, members=corpus[:6], nonmembers=corpus[6:12], tokenizer=tokenizer,
                        attacks=["loss", "informia_token", "minkpp"], cache_dir=None, device="cpu", n_bootstrap=0, progress=False)
    res.save(tmp_path)
    scales = json.loads((tmp_path / "results.json").read_text())["token_scales"]
    assert set(scales) == {"informia_token", "minkpp"}
    for attack, v in scales.items():
        assert v == saved_colour_scale(tmp_path, {}, attack)  # computed from the parquet column, as for an older output
