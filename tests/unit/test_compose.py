"""Static checks of the deployment files (no Docker engine or promtool here to run them)."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from web.metrics import exported_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
#: Services built from the tdc image.
TDC_SERVICES = ("init", "worker", "beat", "flower", "cdc", "serve")
#: Environment variables that hold a secret: their value must be a ${...} reference, whole.
SECRET = re.compile(r"PASSWORD|PASS$|AUTH$|TOKENS?$|SECRET$|WEB_USERS$|_KEY$")
#: A ${NAME}, ${NAME:-default} or ${NAME:?message} reference and nothing else.
REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?:(?::?[-?])[^}]*)?\}$")


def test_the_stack_has_every_part_of_a_deployment() -> None:
    assert set(COMPOSE["services"]) == {"mysql", "postgres", "redis", "rabbitmq", "elasticsearch", "init", "worker",
                                        "beat", "flower", "cdc", "serve", "prometheus", "grafana"}


def test_tdc_services_share_settings_and_take_every_secret_from_the_environment() -> None:
    for name in TDC_SERVICES:
        service = COMPOSE["services"][name]
        assert service["build"]["dockerfile"] == "compose/Dockerfile"
        env = service["environment"]
        assert {"TDC_DB_URLS", "TDC_DWS_URL", "TDC_REDIS_URL", "TDC_BROKER_URL"} <= set(env)
        assert len(env["TDC_DB_URLS"].split(",")) == 4
    # Every secret-like value is a ${...} reference, and so is every password inside a URL.
    for name, service in COMPOSE["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET.search(key):
                assert REFERENCE.match(str(value)), (name, key, value)
            for password in re.findall(r"://[^:/@]*:([^@]*)@", str(value)):
                assert REFERENCE.match(password), (name, key, value)


def _command_lines(service: dict) -> list[str]:
    """What the service runs, as the text a `ps` on the host would show (and its health check)."""
    lines = []
    for part in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
        lines.append(" ".join(part) if isinstance(part, list) else str(part or ""))
    return lines


@pytest.mark.parametrize("name", sorted(COMPOSE["services"]))
def test_no_secret_is_passed_on_a_command_line(name: str) -> None:
    for line in _command_lines(COMPOSE["services"][name]):
        assert not re.search(r"--requirepass|--basic-auth|--basic_auth|\s-a\s|--password|--pass\b", line), line
        # A shell may name a variable holding one (its text is the name), never expand it into a
        # program's arguments: only an assignment (VAR="$$SECRET" program) is allowed.
        for expanded in re.finditer(r"\$\$\{?(\w+)", line):
            if SECRET.search(expanded.group(1)):
                before = line[:expanded.start()]
                assert re.search(r"[A-Z_]+=\"?$", before), line


def test_redis_takes_its_password_from_a_config_file_made_from_the_environment() -> None:
    redis = COMPOSE["services"]["redis"]
    config = {c["source"]: c["target"] for c in redis["configs"]}
    assert redis["command"] == ["redis-server", config["redis_conf"]]
    content = COMPOSE["configs"]["redis_conf"]["content"].splitlines()
    assert "requirepass ${REDIS_PASSWORD:?set REDIS_PASSWORD}" in content
    assert "appendonly yes" in content
    assert "REDISCLI_AUTH=" in " ".join(redis["healthcheck"]["test"])


def test_the_binlog_tail_reads_its_source_from_the_environment() -> None:
    cdc = COMPOSE["services"]["cdc"]
    assert cdc["command"] == ["tdc", "cdc", "binlog"]
    assert cdc["environment"]["TDC_CDC_SOURCE_URL"].startswith("${TDC_CDC_SOURCE_URL:?")


def test_flower_requires_authentication_and_listens_on_localhost_only() -> None:
    flower = COMPOSE["services"]["flower"]
    assert flower["command"] == ["celery", "-A", "worker", "flower", "--port=5555"]
    # Flower reads its basic auth from the environment, and tdc refuses to start it without.
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_tdc_serve_runs_with_its_users_secret_and_tokens_from_the_environment() -> None:
    serve = COMPOSE["services"]["serve"]
    assert serve["command"] == ["tdc", "serve", "--host", "0.0.0.0", "--port", "8000"]
    env = serve["environment"]
    for required in ("TDC_WEB_USERS", "TDC_WEB_SECRET", "TDC_METRICS_TOKEN"):
        assert env[required] == f"${{{required}:?set {required}}}"
    assert env["TDC_RECEIVER_TOKENS"] == "${TDC_RECEIVER_TOKENS:-}"
    assert serve["ports"] == ["127.0.0.1:8000:8000"]
    example = (COMPOSE_DIR / ".env.example").read_text()
    for name in ("TDC_WEB_USERS", "TDC_WEB_SECRET", "TDC_RECEIVER_TOKENS", "TDC_METRICS_TOKEN",
                 "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"^{name}=('')?$", example, re.MULTILINE), name


def test_every_published_port_is_on_localhost_only() -> None:
    for name, service in COMPOSE["services"].items():
        assert all(str(port).startswith("127.0.0.1:") for port in service.get("ports", [])), name


def test_worker_runs_without_q_so_it_consumes_every_queue() -> None:
    assert "-Q" not in COMPOSE["services"]["worker"]["command"]


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    modules = set(project["tool"]["setuptools"]["py-modules"])
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile
    for module in modules:
        assert f"{module}.py" in dockerfile


def test_the_shard_databases_go_through_the_c_driver_the_image_builds() -> None:
    urls = COMPOSE["services"]["worker"]["environment"]["TDC_DB_URLS"].split(",")
    assert len(urls) == 4 and all(url.startswith("mysql+mysqldb://") for url in urls)
    assert '".[mysqlclient]"' in (ROOT / "compose" / "Dockerfile").read_text()


# -- Prometheus and Grafana ---------------------------------------------------------------------

PROMETHEUS = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
ALERTS = yaml.safe_load((COMPOSE_DIR / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((COMPOSE_DIR / "grafana" / "dashboards" / "tdc.json").read_text())
#: What a sample name adds to its family's name.
SUFFIXES = ("_bucket", "_sum", "_count", "_total")
#: Words in a PromQL expression that are not metric names.
PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "deriv", "changes", "histogram_quantile", "time",
                "and", "or", "unless", "on", "ignoring", "le", "max", "min", "avg", "count", "abs", "bool",
                "humanizeDuration", "value", "labels"}


def _mounted(service: str, path: str) -> Path:
    """The file in compose/ that ``service`` sees at ``path`` through its read-only volumes."""
    for volume in COMPOSE["services"][service]["volumes"]:
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        if source.startswith("./") and (path == target or path.startswith(target + "/")):
            return COMPOSE_DIR / source[2:] / path[len(target):].lstrip("/")
    raise AssertionError(f"{path} is not mounted into {service}")


def _metric_names(expr: str) -> set[str]:
    """The tdc metric names in a PromQL expression, label values and strings left out."""
    bare = re.sub(r'"[^"]*"', "", expr)
    return set(re.findall(r"\btdc_[a-z0-9_]+", bare))


def _family(sample: str) -> str:
    exported = exported_names()
    if sample in exported:
        return sample
    for suffix in SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in exported:
            return sample[: -len(suffix)]
    raise AssertionError(f"{sample} is not exported by web/metrics.py ({sorted(exported)})")


def _balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"]*"', "", expr):
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


def test_prometheus_scrapes_tdc_serve_with_the_metrics_token_from_a_secret_file() -> None:
    (job,) = PROMETHEUS["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["serve:8000"]}]
    assert job["authorization"]["type"] == "Bearer"
    assert "credentials" not in job["authorization"]
    token_file = job["authorization"]["credentials_file"]
    prometheus = COMPOSE["services"]["prometheus"]
    assert token_file == f"/run/secrets/{prometheus['secrets'][0]}"
    assert COMPOSE["secrets"][prometheus["secrets"][0]] == {"environment": "TDC_METRICS_TOKEN"}
    config_path = next(a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file="))
    assert _mounted("prometheus", config_path) == COMPOSE_DIR / "prometheus" / "prometheus.yml"
    for rule_file in PROMETHEUS["rule_files"]:
        assert _mounted("prometheus", rule_file) == COMPOSE_DIR / "prometheus" / "alerts.yml"
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"])


def test_alert_rules_are_well_formed_and_name_only_exported_metrics() -> None:
    rules = [rule for group in ALERTS["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    used: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"Tdc[A-Za-z]+", rule["alert"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert "for" not in rule or re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert _balanced(rule["expr"]), rule["alert"]
        names = _metric_names(rule["expr"])
        assert names or "up{" in rule["expr"], rule["alert"]
        used |= {_family(name) for name in names}
        leftover = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", re.sub(r'"[^"]*"|\[\d+[smh]\]', "", rule["expr"])))
        assert leftover - names - PROMQL_WORDS <= {"up", "job", "state", "queue", "kind", "status"}, rule["alert"]
    # What the deployment must be told about: a growing backlog, failures, reconciliation
    # differences, the binlog tail's lag, and alarms.
    assert {"tdc_tasks", "tdc_failed_tasks", "tdc_reconcile_last_run_differences", "tdc_binlog_tail_lag_seconds",
            "tdc_alarms"} <= used


def test_grafana_is_provisioned_with_prometheus_and_the_tdc_dashboard() -> None:
    grafana = COMPOSE["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    provisioning = _mounted("grafana", "/etc/grafana/provisioning")
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "tdc.yml").read_text())["providers"]
    assert _mounted("grafana", provider["options"]["path"]) / "tdc.json" == COMPOSE_DIR / "grafana/dashboards/tdc.json"
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]


def test_the_dashboard_shows_every_exported_metric_and_queries_only_those() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["panels"]
    shown: set[str] = set()
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in DASHBOARD["panels"]:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert _balanced(target["expr"]), target["expr"]
            names = _metric_names(target["expr"])
            assert names, target["expr"]
            shown |= {_family(name) for name in names}
    assert shown == exported_names()
