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
