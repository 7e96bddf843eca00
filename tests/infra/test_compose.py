"""The compose stack, read as data (Docker does not run on CI): services and their start order, health
checks, volumes, environment without secrets, the worker command, the CUDA variant; and prefect.yaml,
which must be what flows/deployments.py renders (one definition of the deployments)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
LONG_RUNNING = ("postgres", "mlflow", "prefect-server", "worker", "worker-gpu")
WORKERS = ("worker", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    """KEY=value lines of infra/.env.example."""
    pairs = (line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``) over a
    parsed value, so assertions see what a container gets with the given settings."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"required variable {name} unset: {arg}")
        return arg if op in (":-", "-") else ""

    return VAR.sub(one, value).replace("$$", "$")


def variables(value: Any) -> dict[str, str | None]:
    """Every variable a parsed compose value reads (comments excluded) -> its operator (``:-``, ``:?``, or None)."""
    if isinstance(value, dict):
        return {k: v for item in value.values() for k, v in variables(item).items()}
    if isinstance(value, list):
        return {k: v for item in value for k, v in variables(item).items()}
    return {m["name"]: m["op"] for m in VAR.finditer(value)} if isinstance(value, str) else {}


def resolved(compose: dict[str, Any], **settings: str) -> dict[str, Any]:
    return interpolate(compose, {"POSTGRES_PASSWORD": "from-dot-env", **settings})


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping (anchors merge into it)"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


# ------------------------------------------------------------------------------------------ services


def test_the_services_of_the_stack(compose):
    assert compose["name"] == "spex"  # volume names (backups) do not depend on the directory compose runs from
    # at least these (the scale-out may add its own services, e.g. a Ray head)
    assert {"postgres", "mlflow", "prefect-server", "deploy", "worker", "worker-gpu"} <= set(compose["services"])
    images = {name: s.get("image", "") for name, s in compose["services"].items()}
    assert images["postgres"].startswith("postgres:16")
    for name in ("mlflow", "prefect-server", "deploy", "worker"):  # one image, the pinned versions
        assert images[name] == "${SPEX_IMAGE:-spex:latest}"
        assert compose["services"][name]["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
    assert (INFRA / "Dockerfile").exists() and (INFRA / "Dockerfile.dockerignore").exists()


def test_start_order_waits_for_health(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert rule["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}, which has no health check"
            else:
                assert services[dependency]["restart"] == "no"  # a one-shot step
    for name in ("mlflow", "prefect-server"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in WORKERS:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"}, "mlflow": {"condition": "service_healthy"},
            "prefect-server": {"condition": "service_healthy"},
            "deploy": {"condition": "service_completed_successfully"}}
    assert services["deploy"]["depends_on"] == {"prefect-server": {"condition": "service_healthy"}}


def test_health_checks_probe_what_each_service_serves(compose):
    services = resolved(compose)["services"]
    probes = {}
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3
        assert {"interval", "timeout"} <= set(check)
        probes[name] = " ".join(check["test"][1:])
        assert services[name]["restart"] == "unless-stopped"
    assert "pg_isready -h 127.0.0.1" in probes["postgres"] and "-d prefect" in probes["postgres"]
    assert "--port=5000" in command(services["mlflow"]) and "127.0.0.1:5000/health" in probes["mlflow"]
    assert " --port 4200 " in " ".join(command(services["prefect-server"])) + " "
    assert "127.0.0.1:4200/api/health" in probes["prefect-server"]
    for name in WORKERS:  # the worker's own health server (prefect worker start --with-healthcheck, port 8080)
        assert "--with-healthcheck" in command(services[name]) and "127.0.0.1:8080/health" in probes[name]


def test_volumes_keep_the_state(compose):
    services = resolved(compose)["services"]
    assert {"pgdata", "mlartifacts", "spexdata"} <= set(compose["volumes"])
    for name, service in services.items():  # every named volume a service mounts is declared
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], (name, volume)
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    init = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    init_dir = INFRA / init.split(":")[0]
    sql = " ".join(p.read_text() for p in init_dir.glob("*.sql"))
    # the databases the services' URLs name exist after first start
    assert "CREATE DATABASE mlflow" in sql and "CREATE DATABASE prefect" in sql
    assert environment(services["postgres"])["POSTGRES_DB"] == "spex"
    assert "--artifacts-destination=/mlartifacts" in command(services["mlflow"])
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    for name in WORKERS:
        assert environment(services[name])["SPEX_DATA_DIR"] == "/data" and "spexdata:/data" in services[name]["volumes"]
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "chown spex:spex /data /mlartifacts" in dockerfile  # fresh volumes are writable by the non-root user


# ------------------------------------------------------------------------------------------ settings and secrets


def test_no_secret_in_the_repo(compose, env_example):
    used = variables(compose)
    required = {name for name, op in used.items() if op in (":?", "?")}
    assert required == {"POSTGRES_PASSWORD"}
    # every setting compose reads is documented in .env.example, and the example holds no secret
    assert set(used) <= set(env_example), set(used) - set(env_example)
    assert env_example["POSTGRES_PASSWORD"] == ""
    assert ".env" in (INFRA / ".gitignore").read_text().split()
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(compose, {})  # compose refuses to start without the password
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|(^|_)TOKEN$|_KEY$", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:[-?][^}]*)?\}", value), f"{name}.{key} is hard-coded"
    # the password reaches only the variables libpq and the postgres image read: never a URL or a command
    for name, service in resolved(compose)["services"].items():
        for key, value in environment(service).items():
            assert "from-dot-env" not in value or key in ("PGPASSWORD", "POSTGRES_PASSWORD"), f"{name}.{key}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}.{key} has a password in a URL"
        line = " ".join(command(service) if "command" in service else [])
        assert "from-dot-env" not in line and not re.search(r"://[^/@\s]+:[^/@\s]+@", line), f"{name} command"


def test_every_service_that_reaches_postgres_gets_the_password_from_the_environment(compose):
    services = resolved(compose)["services"]
    for name in ("mlflow", "prefect-server", *WORKERS):
        assert environment(services[name])["PGPASSWORD"] == "from-dot-env"
    assert environment(services["postgres"])["POSTGRES_PASSWORD"] == "from-dot-env"
    assert "postgresql+psycopg://spex@postgres:5432/mlflow" in " ".join(command(services["mlflow"]))
    assert environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"] == \
        "postgresql+asyncpg://spex@postgres:5432/prefect"


def test_telemetry_is_off_everywhere(compose):
    for name, service in resolved(compose)["services"].items():
        if (service.get("build") or {}).get("dockerfile") != "infra/Dockerfile":
            continue  # third-party images (postgres) have no spex, MLflow or Prefect inside
        env = environment(service)
        assert env["DO_NOT_TRACK"] == "1" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    for setting in ("DO_NOT_TRACK=1", "MLFLOW_DISABLE_TELEMETRY=true", "PREFECT_SERVER_ANALYTICS_ENABLED=false"):
        assert setting in (INFRA / "Dockerfile").read_text()


def test_published_ports_bind_to_localhost_by_default(compose):
    for name in ("postgres", "mlflow", "prefect-server"):
        (port,) = resolved(compose)["services"][name]["ports"]
        assert port.startswith("127.0.0.1:")
        (exposed,) = resolved(compose, SPEX_BIND="0.0.0.0", MLFLOW_PORT="15000")["services"][name]["ports"]
        assert exposed.startswith("0.0.0.0:")
    assert resolved(compose, MLFLOW_PORT="15000")["services"]["mlflow"]["ports"] == ["127.0.0.1:15000:5000"]


# ------------------------------------------------------------------------------------------ workers


def test_the_worker_runs_the_deployments(compose):
    services = resolved(compose)["services"]
    worker = command(services["worker"])
    assert worker[:3] == ["prefect", "worker", "start"]
    assert "--pool=spex" in worker and "--type=process" in worker and "--limit=1" in worker
    env = environment(services["worker"])
    # what spex/settings.py and Prefect read, pointing at the services by their compose names
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["SPEX_DATABASE_URL"] == "postgresql+psycopg://spex@postgres:5432/spex"
    assert env["OMP_NUM_THREADS"] == "1"
    assert "mlflow:5000" in environment(services["mlflow"])["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    # the deploy step registers prefect.yaml on the pool the worker polls
    deploy = " ".join(command(services["deploy"]))
    assert "prefect deploy --all --no-prompt --prefect-file /app/prefect.yaml" in deploy
    assert environment(services["deploy"])["SPEX_WORK_POOL"] == "spex" and "--type process" in deploy
    other = resolved(compose, SPEX_WORK_POOL="audits")["services"]
    assert "--pool=audits" in command(other["worker"]) and environment(other["deploy"])["SPEX_WORK_POOL"] == "audits"


def test_the_cuda_worker(compose):
    services = resolved(compose)["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # only with `docker compose --profile gpu`
    assert gpu["image"] == "spex-cuda:latest" and gpu["build"]["dockerfile"] == "infra/Dockerfile"
    assert re.search(r"/whl/cu\d+$", gpu["build"]["args"]["TORCH_INDEX_URL"])
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["device_ids"] == ["0"]
    assert command(gpu)[:3] == ["prefect", "worker", "start"] and "--limit=1" in command(gpu)  # one audit per GPU
    assert environment(gpu) == environment(services["worker"])  # same settings as the CPU worker
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    pinned = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                  if d.startswith("torch=="))
    assert f"ARG TORCH_VERSION={pinned.removeprefix('torch==')}" in dockerfile


# ------------------------------------------------------------------------------------------ prefect.yaml


def _normalized(document: dict[str, Any]) -> dict[str, Any]:
    """prefect.yaml with spec parameters validated: a spec field added later with a default does not
    make the committed file stale, a renamed or removed one does."""
    from spex.audit.spec import validate_spec

    for deployment in document["deployments"]:
        if "spec" in deployment["parameters"]:
            deployment["parameters"]["spec"] = validate_spec(deployment["parameters"]["spec"]).public_dict()
    return document


def test_prefect_yaml_is_rendered_from_the_code(monkeypatch):
    from flows.deployments import prefect_yaml

    for name in ("SPEX_NIGHTLY_MODEL", "SPEX_NIGHTLY_ALIAS", "SPEX_NIGHTLY_SPEC", "SPEX_NIGHTLY_CRON", "SPEX_NIGHTLY_TIMEZONE"):
        monkeypatch.delenv(name, raising=False)
    committed = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert _normalized(committed) == _normalized(yaml.safe_load(prefect_yaml())), \
        "prefect.yaml is stale: python -m flows.deployments yaml > prefect.yaml"


def test_prefect_yaml_is_what_prefect_deploy_reads():
    import importlib

    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import Flow

    document = PrefectYamlModel.model_validate(yaml.safe_load((ROOT / "prefect.yaml").read_text()))
    assert document.pull == []  # module entrypoints: workers import the installed package
    names = {d.name: d for d in document.deployments}
    assert set(names) == {"audit", "release", "nightly-champion-audit"}
    for deployment in document.deployments:
        module, _, attribute = deployment.entrypoint.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), attribute), Flow)
        assert deployment.work_pool.name == "spex"
    (schedule,) = names["nightly-champion-audit"].schedules
    assert schedule.cron == "0 2 * * *" and schedule.timezone == "UTC"
    assert names["nightly-champion-audit"].concurrency_limit == 1
    assert not names["audit"].schedules and not names["release"].schedules
