"""Flower starts only with authentication configured, on its command line or in the environment."""

import pytest

from reliability.flower_auth import MESSAGE, flower_auth_configured, require_flower_auth

CELERY = ["celery", "-A", "worker"]


@pytest.mark.parametrize(("argv", "env"), [
    (CELERY + ["flower", "--basic-auth=ops:pw"], {}),
    (CELERY + ["flower", "--basic_auth", "ops:pw"], {}),
    (CELERY + ["flower", "--auth=.*@example\\.com"], {}),
    (CELERY + ["flower"], {"FLOWER_BASIC_AUTH": "ops:pw"}),
    (CELERY + ["flower"], {"FLOWER_AUTH": ".*@example\\.com"}),
])
def test_flower_starts_with_authentication(argv, env) -> None:  # type: ignore[no-untyped-def]
    assert flower_auth_configured(argv, env)
    require_flower_auth(argv, env)


@pytest.mark.parametrize(("argv", "env"), [
    (CELERY + ["flower"], {}),
    (CELERY + ["flower", "--basic-auth="], {"FLOWER_BASIC_AUTH": " "}),
    (CELERY + ["flower", "--port=5555"], {"FLOWER_OAUTH2_KEY": "k"}),
])
def test_flower_without_authentication_is_refused(argv, env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit, match="refuses to start without authentication") as stopped:
        require_flower_auth(argv, env)
    assert stopped.value.code == MESSAGE


def test_other_commands_are_not_concerned() -> None:
    require_flower_auth(CELERY + ["worker", "--loglevel", "INFO"], {})
    require_flower_auth(CELERY + ["beat"], {})
