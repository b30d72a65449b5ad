"""Flower must not start without authentication: it can revoke tasks and shut workers down.

``celery -A worker flower`` imports ``worker`` first, which calls ``require_flower_auth``: the
command stops with a clear message unless basic auth or OAuth is configured, on the command line
(``--basic-auth``, ``--auth``, ``--auth_provider``) or in the environment (``FLOWER_BASIC_AUTH``,
``FLOWER_AUTH``, ``FLOWER_AUTH_PROVIDER``), so that credentials stay out of the repository.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

OPTIONS = ("--basic-auth", "--basic_auth", "--auth", "--auth-provider", "--auth_provider")
VARIABLES = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH", "FLOWER_AUTH_PROVIDER")

MESSAGE = ("tdc: Flower refuses to start without authentication (it can revoke tasks and shut workers "
           "down). Set FLOWER_BASIC_AUTH=user:password (several: user1:pw1,user2:pw2), or FLOWER_AUTH with "
           "FLOWER_OAUTH2_KEY, FLOWER_OAUTH2_SECRET and FLOWER_OAUTH2_REDIRECT_URI for OAuth, in the environment.")


def starting_flower(argv: Sequence[str]) -> bool:
    """Whether this process is ``celery ... flower``."""
    return "flower" in argv[1:]


def flower_auth_configured(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    given = any(arg.split("=", 1)[0] in OPTIONS and (("=" in arg and arg.split("=", 1)[1].strip())
                                                     or index + 1 < len(argv))
                for index, arg in enumerate(argv))
    return given or any(env.get(name, "").strip() for name in VARIABLES)


def require_flower_auth(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """SystemExit with MESSAGE when ``argv`` starts Flower without authentication."""
    if starting_flower(argv) and not flower_auth_configured(argv, env):
        raise SystemExit(MESSAGE)
