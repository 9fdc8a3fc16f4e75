"""What is scored: completion-only and assistant-only aggregation over one cached whole-text pass,
span-restricted token attacks, and the one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memlens.errors import DataError

# a newline ends each prompt: the byte-level pre-tokenizer splits there, so no token crosses into the completion
RECORDS = [
    {"id": "a", "prompt": "Question: river stone lamp?\n", "completion": "Answer orchard violet copper harbor.", "label": 1},
    {"id": "b", "prompt": "Question: meadow?\n", "completion": "Answer lantern thistle, code 412.", "label": 0},
    {"id": "c", "prompt": "Question: falcon ember willow marble?\n", "completion": "Answer cedar.", "label": 1},
]

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
# the same layout, marking the assistant turns for return_assistant_tokens_mask
GENERATION_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<assistant>{% generation %}{{ m['content'] }}"
                       "</assistant>\n{% endgeneration %}{% else %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endif %}"
                       "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def _hand_logprobs(model, tok, text: str) -> np.ndarray:
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return np.array([lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)])


def test_completion_only_scores_equal_a_hand_computation(llama):
    from memlens import audit

    res = audit(llama.path, data=RECORDS, attacks=["loss", "mink", "minkpp"], attack_params={"mink": {"k": 0.5}},
                cache_dir=None, progress=False, n_bootstrap=0, device="cpu")
    assert res.settings["score"]["mode"] == "completion" and res.settings["score"]["implied_by_records"]
    assert res.notes[0].startswith("scored: completion tokens only")
    model, tok = llama.model, llama.tokenizer
    for i, r in enumerate(RECORDS):
        lp = _hand_logprobs(model, tok, r["prompt"] + r["completion"])
        n_c = len(tok(r["completion"], add_special_tokens=False)["input_ids"])
        comp = lp[-n_c:]  # the completion's tokens; the prompt's are context only
        assert res.samples[i].text == r["prompt"] + r["completion"]
        assert res.scores["loss"][i] == pytest.approx(comp.mean(), abs=1e-5)
        assert res.scores["mink"][i] == pytest.approx(np.sort(comp)[:n_c // 2].mean(), abs=1e-5)
        # token scores stay aligned to the whole text: NaN on the prompt, scored on the completion
        tsc = res.token_scores["minkpp"][i]
        assert len(tsc) == len(lp) and np.isnan(tsc[:-n_c]).all() and np.isfinite(tsc[-n_c:]).all()
    # --score all on the same records: every token, and the same full-length statistics
    whole = audit(llama.path, data=RECORDS, attacks=["loss"], score="all", cache_dir=None, progress=False, n_bootstrap=0,
                  device="cpu")
    for i, r in enumerate(RECORDS):
        assert whole.scores["loss"][i] == pytest.approx(_hand_logprobs(model, tok, r["prompt"] + r["completion"]).mean(), abs=1e-5)
    assert not whole.settings["score"]["implied_by_records"]


def test_changing_what_is_scored_runs_no_model(llama, tmp_path):
    from memlens import audit

    kw = dict(data=RECORDS, attacks=["loss", "minkpp"], cache_dir=tmp_path / "cache", progress=False, n_bootstrap=0, device="cpu")
    first = audit(llama.path, **kw)
    # cache_only refuses to run a model: both scopes come from the cache entries of the first run
    again = audit(llama.path, score="all", cache_only=True, **kw)
    restricted = audit(llama.path, score="completion", cache_only=True, **kw)
    np.testing.assert_allclose(restricted.scores["loss"], first.scores["loss"])
    assert not np.allclose(again.scores["loss"], first.scores["loss"])


def test_span_parameter_restricts_one_attack(llama):
    from memlens import audit

    recs = [{"id": f"t{i}", "text": t, "label": i % 2, "pii": [{"type": "code", "start": t.index("code"), "end": len(t) - 1}]}
            for i, t in enumerate(["Velvet walnut hazel, code 314.", "Amber cobalt the river, code 271.", "Stone lamp, code 999."])]
    res = audit(llama.path, data=recs, attacks=["loss", "minkpp"], attack_params={"minkpp": {"span": "pii", "k": 1.0}},
                cache_dir=None, progress=False, n_bootstrap=0, device="cpu")
    assert res.settings["score"]["mode"] == "all" and res.settings["attack_params"]["minkpp"]["span"] == "pii"
    for i, r in enumerate(recs):
        st = res.target_stats[i]
        a, b = r["pii"][0]["start"], r["pii"][0]["end"]
        inside = (st.span_start < b) & (st.span_end > a)
        z = (st.logprob.astype(np.float64) - st.mean_logp) / np.maximum(st.std_logp.astype(np.float64), 1e-6)
        assert res.scores["minkpp"][i] == pytest.approx(z[inside].mean(), abs=1e-6)  # k=1: the mean over the span
        assert res.scores["loss"][i] == pytest.approx(st.logprob.astype(np.float64).mean(), abs=1e-6)  # unrestricted
    with pytest.raises(DataError, match="no audited text has 'secret' spans"):
        audit(llama.path, data=recs, attacks=["loss"], attack_params={"loss": {"span": "secret"}}, cache_dir=None,
              progress=False, n_bootstrap=0, device="cpu")


@pytest.fixture
def chat_tok(llama):
    import copy

    tok = copy.deepcopy(llama.tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    return tok


CHATS = [
    {"id": "c0", "label": 1, "messages": [{"role": "user", "content": "river stone?"}, {"role": "assistant", "content": "lamp orchard."},
                                          {"role": "user", "content": "and then?"}, {"role": "assistant", "content": "violet copper."}]},
    {"id": "c1", "label": 0, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "meadow?"},
                                          {"role": "assistant", "content": "lantern thistle, code 412."}]},
]


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, GENERATION_TEMPLATE], ids=["prefix-spans", "assistant-mask"])
def test_chat_record_scores_only_assistant_tokens(llama, chat_tok, template):
    from memlens import audit

    chat_tok.chat_template = template
    res = audit(llama.model, data=CHATS, tokenizer=chat_tok, attacks=["loss", "minkpp"], cache_dir=None, progress=False,
                n_bootstrap=0)
    assert res.settings["score"]["mode"] == "assistant"
    for i, rec in enumerate(CHATS):
        text = res.samples[i].text
        assert text == chat_tok.apply_chat_template(rec["messages"], tokenize=False)  # rendered by the template
        # the assistant turns, each with its end-of-turn marker, by hand
        want, pos = [], 0
        for m in rec["messages"]:
            if m["role"] == "assistant":
                a = text.index("<assistant>" + m["content"], pos) + len("<assistant>")
                want.append([a, a + len(m["content"] + "</assistant>\n")])
                pos = want[-1][1]
        assert res.samples[i].meta["score_spans"]["assistant"] == want
        st = res.target_stats[i]
        inside = np.zeros(len(st), dtype=bool)
        for a, b in want:
            inside |= (st.span_start < b) & (st.span_end > a)
        assert 0 < inside.sum() < len(st)
        assert res.scores["loss"][i] == pytest.approx(st.logprob[inside].astype(np.float64).mean(), abs=1e-6)
        assert np.isnan(res.token_scores["minkpp"][i][~inside]).all()


def test_chat_without_assistant_turn_is_one_line_error(llama, chat_tok):
    from memlens import audit

    bad = CHATS + [{"id": "q", "label": 0, "messages": [{"role": "user", "content": "only a question"}]}]
    with pytest.raises(DataError, match="chat 'q' has no assistant turn") as e:
        audit(llama.model, data=bad, tokenizer=chat_tok, attacks=["loss"], cache_dir=None, progress=False, n_bootstrap=0)
    assert "\n" not in str(e.value)
    # scoring the whole conversation is fine
    res = audit(llama.model, data=bad, tokenizer=chat_tok, attacks=["loss"], score="all", cache_dir=None, progress=False,
                n_bootstrap=0)
    assert len(res.scores) == 3


def test_record_shape_errors(llama, chat_tok, tmp_path):
    from memlens import audit
    from memlens.data import load_samples

    mixed = RECORDS + [{"id": "d", "text": "plain text here", "label": 0}]
    with pytest.raises(DataError, match="mix record shapes"):
        audit(llama.path, data=mixed, attacks=["loss"], cache_dir=None, progress=False, n_bootstrap=0, device="cpu")
    with pytest.raises(DataError, match="has no completion to score"):
        audit(llama.path, data=mixed, attacks=["loss"], score="completion", cache_dir=None, progress=False, n_bootstrap=0,
              device="cpu")
    with pytest.raises(DataError, match="no chat template"):
        audit(llama.path, data=CHATS, attacks=["loss"], cache_dir=None, progress=False, n_bootstrap=0, device="cpu")
    p = tmp_path / "chats.jsonl"
    p.write_text("\n".join(json.dumps(c) for c in CHATS) + "\n" + json.dumps({"id": "x", "messages": "not json"}) + "\n")
    with pytest.raises(DataError, match="record 3: 'messages' is not a list"):
        load_samples(p)
    p.write_text(json.dumps({"prompt": "p", "completion": ""}) + "\n")
    with pytest.raises(DataError, match="empty completion"):
        load_samples(p)


def test_restrict_cuts_references_comparison_and_text():
    from memlens.scope import restrict, token_mask
    from memlens.stats import AttackInput, ReferenceView, TokenComparison, TokenStats

    def stats(starts, ends, lp):
        n = len(starts)
        return TokenStats(np.arange(n), np.array(lp), np.zeros(n), np.zeros(n), np.ones(n), np.ones(n), np.array(starts), np.array(ends))

    t = stats([0, 2, 5, 8], [2, 5, 8, 10], [-1.0, -2.0, -3.0, -4.0])
    r = stats([0, 5], [5, 10], [-7.0, -9.0])  # another tokenization
    comp = TokenComparison([np.array([1.0, 2.0, 3.0, 4.0])], [np.array([0.1, 0.2, 0.3, 0.4])])
    inp = AttackInput(["abcdefghij"], [t], [ReferenceView("r", [r])], comp)
    cut = restrict(inp, [[(4, 9)]])
    np.testing.assert_array_equal(token_mask(t, [(4, 9)]), [False, True, True, True])
    np.testing.assert_array_equal(cut.inp.target[0].logprob, [-2.0, -3.0, -4.0])
    np.testing.assert_array_equal(cut.inp.references[0].stats[0].logprob, [-7.0, -9.0])
    np.testing.assert_array_equal(cut.inp.comparison.kl[0], [0.2, 0.3, 0.4])
    assert cut.inp.texts == ["efghi"]
    none = restrict(inp, [None])
    assert len(none.inp.target[0]) == 0 and none.missing == 1
