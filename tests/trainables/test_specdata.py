"""Specs are data: the one loader yields JSON's types and refuses tags, aliases, duplicates."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import yaml

from trainables.core.specdata import MAX_NESTING, SpecDataError, load_json, load_yaml


def billion_laughs(levels: int = 9) -> str:
    """9 levels of 9 aliases each: 9**9 strings once expanded, under 1 KiB as text."""
    lines = ['name: lol\nx0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]\n")
    return "".join(lines)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: !!binary /w==", "YAML tag !!binary at line 1"),
        ("a: !!set {x, y}", "YAML tag !!set"),
        ("a: !!timestamp 2001-12-14", "YAML tag !!timestamp"),
        ("a: !!omap [{x: 1}]", "YAML tag !!omap"),
        ("a: !!python/object/apply:os.system [ls]", "YAML tag !!python/object/apply:os.system"),
        ("a: !!str 3", "YAML tag !!str"),
        ("a: !local x", "YAML tag !local"),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
        ("a: {b: 1, b: 2}", "duplicate key 'b' at line 1"),
        ("a: &x [1]\nb: *x\n", "YAML alias *x at line 2"),
        ("<<: {a: 1}", "merge key '<<'"),
        ("? [1, 2]\n: x\n", "a mapping or list as a key"),
        ("a: 1\n---\nb: 2\n", "a second YAML document"),
        ("a: " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "nested deeper than 32"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_yaml_that_is_not_plain_data_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(SpecDataError) as err:
        load_yaml(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_plain_yaml_reads_as_safe_load_does_except_dates() -> None:
    text = (
        "s: text\nq: 'quoted: 1'\ni: 0x1f\nf: 2.5\ninf: .inf\nb: yes\nn: ~\ne:\n"
        "l: [1, -2, 1_000]\nm: {k: v}\nday: 2024-01-31\nwhen: 2001-12-14 21:59:43.10 -5\n"
    )
    got = load_yaml(text)
    want = yaml.safe_load(text)  # dates become datetime objects there: JSON has none
    assert got.pop("day") == "2024-01-31" and got.pop("when") == "2001-12-14 21:59:43.10 -5"
    assert got == {k: v for k, v in want.items() if k not in ("day", "when")}
    assert load_yaml("a: <<") == {"a": "<<"}  # a merge key only where a key is expected
    assert load_yaml("") is None and load_yaml("# only a comment\n") is None


def test_an_alias_bomb_is_refused_in_well_under_a_second_and_a_few_mb() -> None:
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(SpecDataError, match="alias"):
        load_yaml(billion_laughs())
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 1.0 and peak < 10 * 2**20


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"x": {"b": [1], "b": [2]}}', "duplicate key 'b'"),
        ('{"a": NaN}', "NaN is not a finite number"),
        ('{"a": -Infinity}', "-Infinity is not a finite number"),
        ('{"a": ', "not valid JSON"),
    ],
)
def test_json_duplicates_and_non_finite_constants_are_refused(text: str, says: str) -> None:
    with pytest.raises(SpecDataError, match=says):
        load_json(text)
    assert load_json('{"a": [1, 2.5, null, true, "s"]}') == {"a": [1, 2.5, None, True, "s"]}
