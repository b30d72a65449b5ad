"""Who may use ``tdc serve``: console users with scrypt-hashed passwords, per-source bearer tokens
for the receiver, one bearer token for ``/metrics``, and the CSRF token of a console session.

Nothing secret is kept in the code or the repository: users, tokens and the session key come
from the environment (``settings.py``).  Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping

#: scrypt cost: n=2**14, r=8, p=1 takes ~50 ms and 16 MiB per check (the interactive-login
#: figures of RFC 7914 §2 and OWASP's password storage guidance).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt:N:R:P$SALT$HASH``, the form ``TDC_WEB_USERS`` takes (``tdc serve --hash-password``)."""
    if not password:
        raise ValueError("a password may not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2, dklen=32)
    return f"{SCHEME}:{n}:{r}:{p}${_b64(salt)}${_b64(digest)}"


def check_password_hash(stored: str) -> None:
    """Raise ValueError naming what is wrong with a stored hash (checked when the server starts)."""
    try:
        params, salt, digest = stored.split("$")
        scheme, n, r, p = params.split(":")
        if scheme != SCHEME or int(n) < 2**10 or int(n) & (int(n) - 1) or int(r) < 1 or int(p) < 1:
            raise ValueError
        _unb64(salt), _unb64(digest)
    except (ValueError, TypeError):
        raise ValueError("is not a password hash from `tdc serve --hash-password` (scrypt:N:R:P$SALT$HASH)") from None


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a wrong password or a malformed hash."""
    try:
        check_password_hash(stored)
    except ValueError:
        return False
    params, salt, digest = stored.split("$")
    _, n, r, p = (int(x) if x.isdigit() else x for x in params.split(":"))
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    computed = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=n, r=r, p=p, maxmem=128 * r * n * 2,
                              dklen=len(_unb64(digest)))
    return hmac.compare_digest(computed, _unb64(digest))


#: Checked against when the user is unknown, so a login takes as long for a missing user as
#: for a wrong password (no user enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def authenticate(users: Mapping[str, str], name: str, password: str) -> bool:
    stored = users.get(name)
    matched = verify_password(password, stored if stored is not None else _DUMMY_HASH)
    return stored is not None and matched


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def source_of_token(tokens: Mapping[str, str], token: str | None) -> str | None:
    """The receiver source a bearer token belongs to, else None (every token is compared)."""
    found = None
    for source, expected in tokens.items():
        if token is not None and hmac.compare_digest(token.encode(), expected.encode()):
            found = source
    return found


def token_matches(expected: str | None, token: str | None) -> bool:
    return expected is not None and token is not None and hmac.compare_digest(token.encode(), expected.encode())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)
