"""Pure parts of ``tdc serve``: password hashes, tokens, where a login may lead, ages, quantiles."""

import datetime as dt
import math

import pytest

from web.auth import (
    authenticate,
    bearer,
    check_password_hash,
    hash_password,
    source_of_token,
    token_matches,
    verify_password,
)
from web.console import age, safe_next
from web.overview import quantile


def test_a_password_hash_verifies_its_password_only_and_is_salted() -> None:
    stored = hash_password("s3cret", n=2**10)
    assert stored.startswith("scrypt:1024:8:1$")
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored) and not verify_password("", stored)
    assert hash_password("s3cret", n=2**10) != stored
    assert not verify_password("s3cret", "plain-text-password")
    with pytest.raises(ValueError, match="not a password hash"):
        check_password_hash("s3cret")
    with pytest.raises(ValueError, match="not a password hash"):
        check_password_hash("scrypt:1000:8:1$c2FsdA$aGFzaA")  # N must be a power of two
    users = {"ann": stored}
    assert authenticate(users, "ann", "s3cret")
    assert not authenticate(users, "bob", "s3cret") and not authenticate(users, "ann", "wrong")


def test_tokens_name_their_source_and_nothing_else() -> None:
    tokens = {"payment": "tok-a", "crm": "tok-b"}
    assert bearer("Bearer tok-a") == "tok-a" and bearer("bearer  tok-a ") == "tok-a"
    assert bearer("Basic dXNlcjpwYXNz") is None and bearer(None) is None and bearer("Bearer ") is None
    assert source_of_token(tokens, "tok-b") == "crm"
    assert source_of_token(tokens, "tok-") is None and source_of_token(tokens, None) is None
    assert token_matches("m", "m") and not token_matches(None, "m") and not token_matches("m", None)


def test_after_the_login_only_a_path_of_this_site_is_followed() -> None:
    assert safe_next("/failed?x=1") == "/failed?x=1"
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "", None, "failed"):
        assert safe_next(target) == "/", target


def test_ages_read_like_a_person_would_say_them() -> None:
    now = dt.datetime(2026, 11, 27, 12, 0, 0)
    assert age(now - dt.timedelta(seconds=45), now) == "45 s"
    assert age(now - dt.timedelta(minutes=5), now) == "5 min"
    assert age(now - dt.timedelta(hours=3, minutes=12), now) == "3 h 12 min"
    assert age(now - dt.timedelta(days=2, hours=4), now) == "2 d 4 h"
    assert age(None, now) == ""


def test_a_quantile_is_the_bound_of_the_bucket_it_falls_in() -> None:
    buckets = [(0.01, 2), (0.1, 5), (1.0, 9), (math.inf, 10)]
    assert quantile((buckets, 3.0), 0.5) == "≤ 100 ms"
    assert quantile((buckets, 3.0), 0.9) == "≤ 1 s"
    assert quantile((buckets, 3.0), 0.95) == "over 1 s"
    assert quantile(([(0.01, 0), (math.inf, 0)], 0.0), 0.5) == "-" and quantile(None, 0.5) == "-"
