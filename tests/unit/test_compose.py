"""Static checks of the deployment files (no Docker engine here to run them)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())


def test_the_stack_has_every_part_of_a_deployment() -> None:
    assert set(COMPOSE["services"]) == {"mysql", "postgres", "redis", "rabbitmq", "elasticsearch", "init", "worker",
                                        "beat", "flower", "cdc"}


def test_tdc_services_share_settings_and_take_every_secret_from_the_environment() -> None:
    for name in ("init", "worker", "beat", "flower", "cdc"):
        service = COMPOSE["services"][name]
        assert service["build"]["dockerfile"] == "compose/Dockerfile"
        env = service["environment"]
        assert {"TDC_DB_URLS", "TDC_DWS_URL", "TDC_REDIS_URL", "TDC_BROKER_URL"} <= set(env)
        assert len(env["TDC_DB_URLS"].split(",")) == 4
    # Every password-like value, and every password inside a URL, is a ${...} reference.
    for service in COMPOSE["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|PASS$|AUTH", key):
                assert str(value).startswith("${"), (key, value)
            for password in re.findall(r"://[^:/@]*:([^@]*)@", str(value)):
                assert password.startswith("${"), (key, value)


def test_the_binlog_tail_reads_its_source_from_the_environment() -> None:
    cdc = COMPOSE["services"]["cdc"]
    assert cdc["command"] == ["tdc", "cdc", "binlog"]
    assert cdc["environment"]["TDC_CDC_SOURCE_URL"].startswith("${TDC_CDC_SOURCE_URL:?")


def test_flower_requires_authentication_and_listens_on_localhost_only() -> None:
    flower = COMPOSE["services"]["flower"]
    assert "--basic-auth" in " ".join(flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


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
