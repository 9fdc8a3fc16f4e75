"""The CLI's own words: help on every option, one meaning per short flag, --version, what 'all' leaves out."""
from typer.main import get_command
from typer.testing import CliRunner

from memlens._version import __version__
from memlens.attacks import all_note, left_out_of_all
from memlens.cli import app


def _options():
    def walk(c, path):
        if hasattr(c, "commands"):
            for n, sub in c.commands.items():
                yield from walk(sub, path + [n])
        else:
            for p in c.params:
                if getattr(p, "param_type_name", "") == "option":
                    yield " ".join(path), p

    return list(walk(get_command(app), []))


def test_every_option_has_help():
    missing = [f"{cmd} {p.opts[0]}" for cmd, p in _options() if not p.hidden and not p.help]
    assert not missing, missing


def test_one_meaning_per_short_flag():
    meaning: dict[str, set[str]] = {}
    for cmd, p in _options():
        longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
        for short in (o for o in p.opts if len(o) == 2 and o.startswith("-")):
            meaning.setdefault(short, set()).add(longs[0] if longs else short)
    clashes = {s: m for s, m in meaning.items() if len(m) > 1}
    assert not clashes, clashes


def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"memlens {__version__}"


def test_all_says_what_it_left_out_and_why():
    left = left_out_of_all(have_reference=False, have_population=False)
    assert "ltmia" in left and "not in 'all'" in left["ltmia"]
    assert "reference" in left["informia"] and "ref" in left
    note = all_note(left)
    assert note.startswith("--attacks all left out ") and "ltmia (not in 'all': name it (--attacks ltmia))" in note
    with_all = left_out_of_all(have_reference=True, have_population=True)
    assert set(with_all) == {n for n, why in with_all.items() if "not in 'all'" in why}


def _lt(text_null):
    return {"attack": "informia_token", "unit": "bits", "value": 16.5, "rate": 0.001, "source": "non-member tokens",
            "n_tokens": 16849, "n_texts": 144, "text": text_null}


def test_metrics_and_demo_say_the_text_level_flag(tmp_path, capsys):
    from types import SimpleNamespace

    import pandas as pd

    from memlens.cli._common import print_metrics
    from memlens.cli.demo import print_next_steps

    null = {"source": "non-member texts", "n_texts": 144, "requested_rate": 0.01, "rate": 0.01, "null": [],
            "flagged": {"members": [40, 144], "non-members": [1, 144]}}
    result = SimpleNamespace(metrics={}, notes=[], extra={"leak_threshold": _lt(null)}, scores=pd.DataFrame())
    print_metrics(result)
    said = " ".join(capsys.readouterr().out.split())
    assert "the level 0.1% of the 16,849 non-member tokens exceed" in said
    assert ("a text is flagged as leaking when at most 1% of the 144 non-member texts have as many tokens above the threshold "
            "for their length") in said and "flagged: 40 of 144 members, 1 of 144 non-members" in said
    print_next_steps({"demo": {"testbed": str(tmp_path)}, "result": result}, tmp_path / "out")
    said = " ".join(capsys.readouterr().out.split())
    assert ("leaking texts: a text with more tokens above that level, for its length, than all but 1% of the 144 non-member "
            "texts (so at most 1% of non-members are flagged)") in said
    # too few null texts: said so, nothing flagged
    few = {"source": "population texts", "n_texts": 10, "requested_rate": 0.01, "rate": None, "null": [],
           "reason": "10 population texts resolve no rate finer than 9.1% (at least 19 are needed to flag texts)"}
    print_metrics(SimpleNamespace(metrics={}, notes=[], extra={"leak_threshold": _lt(few)}))
    said = " ".join(capsys.readouterr().out.split())
    assert "texts are not flagged as leaking: 10 population texts resolve no rate finer than 9.1%" in said
