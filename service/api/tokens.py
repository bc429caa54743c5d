"""Is a bearer token strong enough to guard the API? A length floor and an entropy estimate.

Length alone lets `0123456789abcdef0123456789abcdef` through. The estimate below
charges nothing for a character a guesser would predict from the ones before it, and
the Shannon entropy of the token's own character frequencies for each other one:

    bits = H(character frequencies) * (characters not predicted)

A character counts as predicted when it continues a walk (a step of -1, 0 or +1 equal
to the step before it, at distance 1 or 2, in code points or along a QWERTY row:
`aaaa`, `abcd`, `9876`, `ababab`, `a1b2c3`, `qwer`) or when the three characters
ending at it occurred earlier (`abcabc`, a word typed twice). A token is refused when
it is shorter than `MIN_TOKEN_CHARS`, holds a placeholder word, has fewer than
`MIN_DISTINCT_CHARS` distinct characters, is all letters of one case (words a person
typed; no generator emits that), or estimates under `MIN_TOKEN_BITS`.

The bounds sit far below what generator output of 32 or more characters scores
(`openssl rand -hex 16` and up, `secrets.token_hex(16)`, `uuid4().hex`,
`secrets.token_urlsafe(24)`): 32 random hex characters have fewer than 7 distinct ones
with probability 2e-10, and tests/service/test_api_tokens.py draws thousands of each
kind. Like any estimate it can be fooled (dictionary words with digits and capitals
score well); it stops the common mistakes, not a determined one.
"""

from __future__ import annotations

import math
from collections import Counter

__all__ = [
    "MIN_DISTINCT_CHARS",
    "MIN_TOKEN_BITS",
    "MIN_TOKEN_CHARS",
    "TOKEN_HOWTO",
    "estimated_bits",
    "weak_token_problem",
]

MIN_TOKEN_CHARS = 32
MIN_DISTINCT_CHARS = 7
MIN_TOKEN_BITS = 64
TOKEN_HOWTO = (
    "generate one with `openssl rand -hex 32` or "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)
# Words of the example values in docs and manifests: such a token is public.
_PLACEHOLDER_WORDS = ("replace", "changeme", "change-me", "placeholder", "example", "xxxxxx")
_QWERTY_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
# Letters of one case: words typed by a person. Not digits: 32 random hex characters
# are all digits about once in 3 million draws, and the estimate handles digits.
_ONE_CASE = {"lowercase letters": str.islower, "uppercase letters": str.isupper}


def _qwerty_position(c: str) -> int | None:
    """Position along the keyboard rows; rows sit 100 apart so no walk crosses them."""
    for row, keys in enumerate(_QWERTY_ROWS):
        if (i := keys.find(c.lower())) >= 0:
            return 100 * row + i
    return None


def _walks(position: list[int | None], i: int) -> bool:
    """Whether character i steps by -1, 0 or +1 as the one before, at distance 1 or 2."""
    for k in (1, 2):
        if i < 2 * k:
            continue
        a, b, c = position[i - 2 * k], position[i - k], position[i]
        if a is None or b is None or c is None:
            continue
        if c - b == b - a and abs(b - a) <= 1:
            return True
    return False


def _predicted(token: str) -> list[bool]:
    """For each character: does a walk or an earlier repeat predict it?"""
    orders: tuple[list[int | None], ...] = (
        [ord(c) for c in token],
        [_qwerty_position(c) for c in token],
    )
    seen: set[str] = set()  # the trigrams ending before i
    predicted = []
    for i in range(len(token)):
        trigram = token[max(0, i - 2) : i + 1]
        predicted.append(any(_walks(o, i) for o in orders) or (i >= 2 and trigram in seen))
        seen.add(trigram)
    return predicted


def estimated_bits(token: str) -> float:
    """Shannon bits per character (of the token's own frequencies) x unpredicted chars."""
    if not token:
        return 0.0
    n = len(token)
    per_char = sum(k / n * math.log2(n / k) for k in Counter(token).values())
    return per_char * sum(not p for p in _predicted(token))


def _one_class(token: str) -> str | None:
    if not token.isalpha():
        return None
    return next((name for name, test in _ONE_CASE.items() if test(token)), None)


def weak_token_problem(token: str) -> str | None:
    """Why `token` must not guard anything, else None."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"{len(token)} characters, fewer than {MIN_TOKEN_CHARS}"
    lowered = token.lower()
    word = next((w for w in _PLACEHOLDER_WORDS if w in lowered), None)
    if word is not None:
        return f"it looks like a placeholder ({word})"
    if (distinct := len(set(token))) < MIN_DISTINCT_CHARS:
        return f"only {distinct} distinct characters, fewer than {MIN_DISTINCT_CHARS}"
    if (cls := _one_class(token)) is not None:
        return f"it is all {cls}"
    bits = estimated_bits(token)
    if bits < MIN_TOKEN_BITS:
        return (
            f"too predictable (sequences, repeats, few distinct characters): an estimated "
            f"{bits:.0f} bits of entropy, fewer than {MIN_TOKEN_BITS}"
        )
    return None
