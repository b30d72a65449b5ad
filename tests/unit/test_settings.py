import os
from pathlib import Path

import pytest

from settings import SettingsError, load_settings


def test_nothing_set_gives_the_embedded_default(tmp_path: Path) -> None:
    settings = load_settings({"TDC_HOME": str(tmp_path)})
    assert settings.db_urls == tuple(f"sqlite:///{tmp_path}/shard{i}.db" for i in range(4))
    assert settings.dws_url == f"sqlite:///{tmp_path}/dws.db"
    assert settings.embedded_redis
    assert settings.redis_url == f"unix://{tmp_path}/redis.sock?db=0"
    assert settings.broker_url == f"redis+socket://{tmp_path}/redis.sock?virtual_host=1"
    assert settings.shards == 4096
    assert settings.dims_reload_at == (3, 30)
    assert settings.digest_at == (7, 0)


def test_one_database_url_serves_all_four_shard_groups() -> None:
    settings = load_settings({"TDC_DB_URLS": "mysql+pymysql://h/db"})
    assert settings.db_urls == ("mysql+pymysql://h/db",) * 4


def test_four_urls_are_kept_in_order() -> None:
    urls = [f"mysql+pymysql://h{i}/db" for i in range(4)]
    assert load_settings({"TDC_DB_URLS": " , ".join(urls)}).db_urls == tuple(urls)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TDC_DB_URLS": "a://1,a://2,a://3"}, "holds 3 URLs"),
        ({"TDC_SHARDS": "4094"}, "multiple of 4"),
        ({"TDC_SHARDS": "many"}, "is not a int"),
        ({"TDC_RETRY_BASE_SECONDS": "-1"}, "must be positive"),
        ({"TDC_DIMS_RELOAD_AT": "25:00"}, "time of day"),
        ({"TDC_DIMS_RELOAD_AT": "3 am"}, "time of day"),
        ({"TDC_ALARM_WEBHOOK": "file:///etc/passwd"}, "http:// or https://"),
    ],
)
def test_unusable_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_a_redis_url_is_also_the_default_broker() -> None:
    settings = load_settings({"TDC_REDIS_URL": "redis://cache:6379/0"})
    assert not settings.embedded_redis
    assert settings.broker_url == "redis://cache:6379/0"


def test_lease_times_default_to_minutes_and_are_checked_against_each_other() -> None:
    settings = load_settings({})
    assert (settings.lease_seconds, settings.queued_lease_seconds, settings.lock_seconds) == (60, 1800, 3600)
    assert settings.visibility_timeout == 2 * settings.step_time_limit + 60
    with pytest.raises(SettingsError, match="twice TDC_STEP_TIME_LIMIT"):
        load_settings({"TDC_STEP_TIME_LIMIT": "300", "TDC_VISIBILITY_TIMEOUT": "600"})
    with pytest.raises(SettingsError, match="must exceed 30"):
        load_settings({"TDC_STEP_TIME_LIMIT": "30"})


def test_time_zones_default_to_utc_and_the_business_zone_to_the_source_zone() -> None:
    assert (str(load_settings({}).source_zone), str(load_settings({}).business_zone)) == ("UTC", "UTC")
    shanghai = load_settings({"TDC_SOURCE_TIMEZONE": "Asia/Shanghai"})
    assert (str(shanghai.source_zone), str(shanghai.business_zone)) == ("Asia/Shanghai", "Asia/Shanghai")
    split = load_settings({"TDC_SOURCE_TIMEZONE": "UTC", "TDC_BUSINESS_TIMEZONE": "Asia/Shanghai"})
    assert (str(split.source_zone), str(split.business_zone)) == ("UTC", "Asia/Shanghai")
    with pytest.raises(SettingsError, match="TDC_SOURCE_TIMEZONE='Mars/Olympus' is not an IANA time zone"):
        load_settings({"TDC_SOURCE_TIMEZONE": "Mars/Olympus"})
    with pytest.raises(SettingsError, match="TDC_BUSINESS_TIMEZONE='\\+08:00' is not an IANA time zone"):
        load_settings({"TDC_BUSINESS_TIMEZONE": "+08:00"})


def test_source_databases_are_the_flows_own_unless_listed() -> None:
    assert load_settings({}).source_databases is None
    assert load_settings({"TDC_SOURCE_DATABASES": "gqsh, gqsh_shard_*"}).source_databases == ("gqsh", "gqsh_shard_*")
    with pytest.raises(SettingsError, match="'gqsh;drop' is not a database name"):
        load_settings({"TDC_SOURCE_DATABASES": "gqsh;drop"})


def test_web_users_and_receiver_tokens_are_pairs_read_from_the_environment() -> None:
    settings = load_settings({"TDC_WEB_USERS": "ann:scrypt:16384:8:1$c2FsdA$aGFzaA, bob:x",
                              "TDC_RECEIVER_TOKENS": "pos=t-1,erp=t=2"})
    assert settings.web_users == {"ann": "scrypt:16384:8:1$c2FsdA$aGFzaA", "bob": "x"}
    assert settings.receiver_tokens == {"pos": "t-1", "erp": "t=2"}
    assert (load_settings({}).web_users, load_settings({}).receiver_tokens, load_settings({}).metrics_token) == ({}, {},
                                                                                                                  None)
    with pytest.raises(SettingsError, match="TDC_RECEIVER_TOKENS: 'pos' is given twice"):
        load_settings({"TDC_RECEIVER_TOKENS": "pos=a,pos=b"})
    with pytest.raises(SettingsError, match="TDC_WEB_USERS: 'ann'... is not NAME:PASSWORD_HASH"):
        load_settings({"TDC_WEB_USERS": "ann"})
    with pytest.raises(SettingsError, match="TDC_RECEIVE_MAX_WRITES='0' must be positive"):
        load_settings({"TDC_RECEIVE_MAX_WRITES": "0"})


MAIL_ENV = {"TDC_SMTP_HOST": "mail.example.com", "TDC_ALARM_FROM": "tdc <tdc@example.com>",
            "TDC_ALARM_TO": "ops@example.com, Night Shift <night@example.com>"}


def test_alarms_are_not_mailed_unless_an_smtp_host_is_set() -> None:
    assert load_settings({}).alarm_mail is None


def test_alarm_mail_defaults_to_plain_smtp_on_port_25_and_ten_mails_a_minute() -> None:
    mail = load_settings(MAIL_ENV).alarm_mail
    assert mail is not None
    assert (mail.host, mail.port, mail.tls, mail.user, mail.password) == ("mail.example.com", 25, "none", None, None)
    assert mail.sender == "tdc <tdc@example.com>"
    assert mail.recipients == ("ops@example.com", "Night Shift <night@example.com>")
    assert mail.per_minute == 10


def test_a_login_defaults_to_starttls_on_587_and_the_password_stays_out_of_the_repr() -> None:
    settings = load_settings({**MAIL_ENV, "TDC_SMTP_USER": "tdc", "TDC_SMTP_PASSWORD": "s3cret-pw"})
    assert settings.alarm_mail is not None
    assert (settings.alarm_mail.tls, settings.alarm_mail.port, settings.alarm_mail.user) == ("starttls", 587, "tdc")
    assert settings.alarm_mail.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings)


@pytest.mark.parametrize(("more", "tls", "port"), [
    ({"TDC_SMTP_TLS": "tls"}, "tls", 465),
    ({"TDC_SMTP_TLS": "STARTTLS"}, "starttls", 587),
    ({"TDC_SMTP_TLS": "starttls", "TDC_SMTP_PORT": "2525"}, "starttls", 2525),
    ({"TDC_SMTP_PORT": "1025", "TDC_ALARM_MAILS_PER_MINUTE": "3"}, "none", 1025),
])
def test_the_tls_mode_chooses_the_default_port_and_a_port_overrides_it(more: dict[str, str], tls: str,
                                                                        port: int) -> None:
    mail = load_settings({**MAIL_ENV, **more}).alarm_mail
    assert mail is not None and (mail.tls, mail.port) == (tls, port)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TDC_SMTP_HOST": "mx", "TDC_ALARM_TO": "ops@example.com"}, "TDC_SMTP_HOST is set but TDC_ALARM_FROM is not"),
        ({"TDC_SMTP_HOST": "mx", "TDC_ALARM_FROM": "tdc@example.com"}, "TDC_SMTP_HOST is set but TDC_ALARM_TO is not"),
        ({"TDC_ALARM_TO": "ops@example.com"}, "TDC_ALARM_TO is set but TDC_SMTP_HOST is not"),
        ({"TDC_SMTP_PASSWORD": "pw"}, "TDC_SMTP_PASSWORD is set but TDC_SMTP_HOST is not"),
        ({**MAIL_ENV, "TDC_ALARM_TO": "ops@example.com, bob"}, "TDC_ALARM_TO: 'bob' is not an e-mail address"),
        ({**MAIL_ENV, "TDC_ALARM_FROM": "a@example.com, b@example.com"}, "TDC_ALARM_FROM must be one address"),
        ({**MAIL_ENV, "TDC_SMTP_USER": "tdc"}, "TDC_SMTP_USER and TDC_SMTP_PASSWORD go together"),
        ({**MAIL_ENV, "TDC_SMTP_PASSWORD": "pw"}, "TDC_SMTP_USER and TDC_SMTP_PASSWORD go together"),
        ({**MAIL_ENV, "TDC_SMTP_USER": "tdc", "TDC_SMTP_PASSWORD": "pw", "TDC_SMTP_TLS": "none"},
         "would send the password in clear"),
        ({**MAIL_ENV, "TDC_SMTP_TLS": "ssl"}, "TDC_SMTP_TLS='ssl' is not one of none, starttls, tls"),
        ({**MAIL_ENV, "TDC_SMTP_PORT": "70000"}, "TDC_SMTP_PORT=70000 is not a TCP port"),
        ({**MAIL_ENV, "TDC_SMTP_PORT": "smtp"}, "TDC_SMTP_PORT='smtp' is not a int"),
        ({**MAIL_ENV, "TDC_ALARM_MAILS_PER_MINUTE": "0"}, "TDC_ALARM_MAILS_PER_MINUTE='0' must be positive"),
    ],
)
def test_unusable_alarm_mail_settings_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    assert message in str(refused.value)


def test_importing_the_flows_fixes_no_setting_before_a_process_sets_its_environment() -> None:
    # A spawned process imports the engine (unpickling its target), then sets its environment.
    import subprocess
    import sys

    script = ("import os, flows.registry, chain.steps\n"
              "os.environ['TDC_REDIS_URL'] = 'redis://example.invalid:6390/3'\n"
              "from settings import get_settings\n"
              "print(get_settings().redis_url)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDC_")}
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert shown.stdout.strip() == "redis://example.invalid:6390/3"
