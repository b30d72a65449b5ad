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
