"""The token strength check (service.api.tokens): weak shapes refused, generator output not."""

from __future__ import annotations

import base64
import random
import secrets
import uuid
from collections.abc import Callable

import pytest

from service.api.tokens import MIN_TOKEN_BITS, estimated_bits, weak_token_problem

# Every kind of token the project generates or tells people to generate (README,
# k8s/README.md, tests/servers.py, Ray's own `generate_new_authentication_token`),
# plus the shortest outputs of the same generators that pass the 32-character floor.
GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "openssl rand -hex 32": lambda r: r.randbytes(32).hex(),
    "openssl rand -hex 16": lambda r: r.randbytes(16).hex(),
    "openssl rand -base64 32": lambda r: base64.b64encode(r.randbytes(32)).decode(),
    "secrets.token_urlsafe(32)": lambda r: (
        base64.urlsafe_b64encode(r.randbytes(32)).rstrip(b"=").decode()
    ),
    "secrets.token_urlsafe(24)": lambda r: base64.urlsafe_b64encode(r.randbytes(24)).decode(),
    "uuid4().hex": lambda r: uuid.UUID(bytes=r.randbytes(16), version=4).hex,
    "str(uuid4())": lambda r: str(uuid.UUID(bytes=r.randbytes(16), version=4)),
    "uppercase hex": lambda r: r.randbytes(16).hex().upper(),
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_generated_tokens_pass(kind: str) -> None:
    """2,000 draws per generator, seeded (reproducible), and one from `secrets` itself."""
    rng = random.Random(kind)
    refused = [t for t in (GENERATORS[kind](rng) for _ in range(2000)) if weak_token_problem(t)]
    assert refused == [], f"{kind}: {refused[:3]} -> {weak_token_problem(refused[0])}"
    for token in (secrets.token_hex(32), secrets.token_urlsafe(32), uuid.uuid4().hex):
        assert weak_token_problem(token) is None, token


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("0123456789abcdef0123456789abcdef", "too predictable"),  # the finding: 32 chars
        ("0123456789abcdef" * 4, "too predictable"),
        ("abcdefghijklmnopqrstuvwxyz012345", "too predictable"),
        ("ZYXWVUTSRQPONMLKJIHGFEDCBA987654", "too predictable"),
        ("a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6", "too predictable"),  # interleaved runs
        ("qwertyuiopasdfghjklzxcvbnm123456", "too predictable"),  # keyboard rows
        ("01234567890123456789012345678901", "too predictable"),
        ("Password123Password123Password123", "too predictable"),  # repeats
        ("a" * 40, "1 distinct characters"),
        ("ab" * 20, "2 distinct characters"),
        ("thisismysupersecretapitokenvalue", "all lowercase letters"),
        ("THISISMYSUPERSECRETAPITOKENVALUE", "all uppercase letters"),
        ("REPLACE-ME-cpsweep-api-token-0123456", "placeholder (replace)"),
        ("short", "5 characters, fewer than 32"),
    ],
)
def test_weak_tokens_are_refused_with_the_reason(token: str, says: str) -> None:
    problem = weak_token_problem(token)
    assert problem is not None and says in problem, problem


def test_estimate_charges_sequences_and_repeats_not_random_characters() -> None:
    strong = random.Random(0).randbytes(16).hex()
    assert estimated_bits(strong) > MIN_TOKEN_BITS
    # A run: only its first characters and the jump from 9 to a are charged (4 x 4 bits).
    assert estimated_bits("0123456789abcdef") == 16.0
    # A repeat is charged for where it starts, not for what it repeats.
    assert estimated_bits(strong[:8] * 4) < estimated_bits(strong[:8]) * 2
    assert estimated_bits("") == 0.0
    assert estimated_bits("a" * 64) == 0.0
