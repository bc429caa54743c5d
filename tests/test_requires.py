"""tests/requires.py: a missing requirement skips with its install line, and fails under CI."""

from __future__ import annotations

import pytest

from tests.requires import ALL, Requirement, requires

_ABSENT = Requirement("a frobnicator", "apt-get install frobnicator", lambda: False)
_HERE = Requirement("a thing", "nothing to do", lambda: True)


def test_a_present_requirement_lets_the_test_run() -> None:
    requires(_HERE, ci=False)
    requires(_HERE, ci=True)


def test_a_missing_requirement_skips_locally_naming_how_to_get_it() -> None:
    with pytest.raises(pytest.skip.Exception) as info:
        requires(_HERE, _ABSENT, ci=False)
    assert str(info.value) == "a frobnicator missing: apt-get install frobnicator"


def test_a_missing_requirement_fails_under_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"CI is set.*apt-get install frobnicator"):
        requires(_ABSENT, ci=True)


def test_every_requirement_says_how_to_install_it() -> None:
    assert all(r.how.startswith("apt-get install ") for r in ALL)
    assert len({r.how for r in ALL}) == len(ALL)
