"""The compose stack checked against the code, since no container engine runs here: every service command
is a real ``tsbatch`` entry point, every ``TSBATCH_*`` variable a real setting (and each service's
environment loads), ports, volumes and secrets consistent, Prometheus finding every scaled worker by DNS
on the port the workers listen on, Grafana provisioned with the datasources the dashboard asks for."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from config import Settings, load_settings
from tests.conftest import wait_for
from tsbatch.cli import main
from tsbatch.localstack import free_port

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "docker-compose.yml"
EXPOSE = ROOT / "deploy" / "compose.expose.yml"
NODE = ROOT / "deploy" / "compose.worker-node.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tsbatch.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"

# What an operator puts into .env; everything else takes the file's defaults.
REQUIRED = {
    "REDIS_PASSWORD": "0123456789abcdef",
    "FLOWER_PASSWORD": "pa,ss:word",
    "REDIS_URL": "redis://:0123456789abcdef@main-host:6379/0",
    "INFLUX_URL": "http://main-host:8086",
    "TELEMETRY_DIR": "/mnt/telemetry",
}
# Compose-level variables (interpolated into the file, never seen by tsbatch) that carry the TSBATCH_
# prefix for history: each is documented in docs/DEPLOY.md and feeds a real setting or a secret.
COMPOSE_VARIABLES = {"TSBATCH_VISIBILITY_TIMEOUT_S", "TSBATCH_TOKEN_FILE"}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``$$``, ``${V}``, ``${V:-default}``, ``${V-default}``, ``${V:?error}``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-") and empty:
            return arg
        if op in ("?", ":?") and empty:
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _VAR.sub(one, text)


def _resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: _resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, env) for v in node]
    return node


def _merge(base: Any, over: Any, key: str = "") -> Any:
    """Compose's merge of an override file: mappings merged, ports/volumes/expose appended, the rest
    (command included) replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list) and key in ("ports", "volumes", "expose"):
        return base + [v for v in over if v not in base]
    return over


def compose(*files: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The files as ``docker compose -f ... config`` would see them (anchors, merges, interpolation)."""
    merged: dict[str, Any] = {}
    for f in files:
        merged = _merge(merged, yaml.safe_load(f.read_text()))
    return _resolve(merged, REQUIRED if env is None else env)  # type: ignore[no-any-return]


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _tsbatch_services(stack: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in stack["services"].items():
        if service.get("image") == "tsbatch:local" or "build" in service:
            yield name, service


STACKS = {
    "main": (MAIN,),
    "main+expose": (MAIN, EXPOSE),
    "worker-node": (NODE,),
}


@pytest.fixture(params=sorted(STACKS))
def stack(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, compose(*STACKS[request.param])


def _seconds(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * unit[u] for n, u in parts)


def _port(mapping: str) -> tuple[str | None, int]:
    """``[ip:]host:container`` -> (ip, container port)."""
    parts = mapping.split(":")
    return (parts[0] if len(parts) == 3 else None), int(parts[-1].split("/")[0])


def _settings_for(service: Mapping[str, Any], roots: Path) -> Settings:
    """The settings a service's container would load, its source roots moved under ``roots`` (the
    container's /srv/telemetry does not exist here; the roots validator looks)."""
    env = _env(service)
    mp = pytest.MonkeyPatch()
    try:
        for key in [k for k in os.environ if k.startswith("TSBATCH_")]:
            mp.delenv(key)
        for key, value in env.items():
            if key == "TSBATCH_SOURCES__ROOTS":
                moved = [roots / p.lstrip("/") for p in json.loads(value)]
                for p in moved:
                    p.mkdir(parents=True, exist_ok=True)
                value = json.dumps([str(p) for p in moved])
            if key.startswith("TSBATCH_"):
                mp.setenv(key, value)
        return load_settings()
    finally:
        mp.undo()


# --- commands -----------------------------------------------------------------------------------------


def test_every_service_command_is_a_real_tsbatch_command_with_real_options(stack) -> None:
    name, config = stack
    runner = CliRunner()
    seen = 0
    for service_name, service in _tsbatch_services(config):
        command = service["command"]
        assert isinstance(command, list), f"{name}/{service_name}: exec form, no shell in between"
        # --help is eager: click parses the whole command line first (an unknown option or subcommand
        # fails with exit 2), then prints the help of the innermost command and exits 0.
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0, f"{name}/{service_name}: tsbatch {' '.join(command)}: {result.output}"
        assert "Usage: main " + command[0] in result.output
        seen += 1
    assert seen


def test_the_image_runs_tsbatch_in_exec_form_and_compose_adds_tini() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.M)
    assert json.loads(entrypoint) == ["tsbatch"]  # exec form: no /bin/sh -c in front of the worker
    assert 'tsbatch = "tsbatch.cli:main"' in (ROOT / "pyproject.toml").read_text()
    installed = shutil.which("tsbatch", path=str(Path(sys.executable).parent))
    assert installed, "the tsbatch console script"
    run = subprocess.run([installed, "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name, files in STACKS.items():
        for service_name, service in _tsbatch_services(compose(*files)):
            # tini (docker-init) is PID 1 and forwards SIGTERM to tsbatch, its only child.
            assert service.get("init") is True, f"{name}/{service_name}"


# --- settings -----------------------------------------------------------------------------------------


def _field(model: type[BaseModel], parts: list[str], var: str) -> None:
    """Walk ``parts`` (lower-cased, split on __) down the settings model; fail unless it ends on a setting."""
    head, rest = parts[0], parts[1:]
    assert head in model.model_fields, f"{var}: no setting {head!r} in {model.__name__}"
    annotation = model.model_fields[head].annotation
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:  # routes.NAME, jobs.NAME, buckets.NAME: any name, then the section's fields
        value_type = annotation.__args__[1]  # type: ignore[union-attr]
        assert len(rest) >= 2, f"{var}: {head}.NAME.KEY"
        _field(value_type, rest[1:], var)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert rest, f"{var}: {head} is a section, not a setting"
        _field(annotation, rest, var)
    else:
        assert not rest, f"{var}: {head} is a setting, not a section"


def test_every_tsbatch_variable_in_the_compose_files_is_a_setting() -> None:
    names: set[str] = set()
    for path in (MAIN, EXPOSE, NODE):
        text = path.read_text()
        # Settings variables (TSBATCH_SECTION__KEY) anywhere, comments included, and the TSBATCH_*
        # compose variables, which must be the documented ones.
        names |= set(re.findall(r"\bTSBATCH_[A-Z0-9_]+\b", text))
    assert names
    deploy_doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for var in sorted(names):
        if "__" not in var:
            assert var in COMPOSE_VARIABLES and f"`{var}`" in deploy_doc, var
            continue
        _field(Settings, var.removeprefix("TSBATCH_").lower().split("__"), var)


def test_each_services_environment_loads_as_settings(stack, tmp_path: Path) -> None:
    name, config = stack
    for service_name, service in _tsbatch_services(config):
        settings = _settings_for(service, tmp_path / service_name)
        # Every source root is mounted into the container: the settings refuse a missing root.
        targets = {str(v).split(":")[1] for v in service.get("volumes", [])}
        for root in json.loads(_env(service).get("TSBATCH_SOURCES__ROOTS", "[]")):
            assert root in targets, f"{name}/{service_name}: {root} is not mounted"
        # The services that talk to InfluxDB mount the token file their route names, as a secret.
        mounted = set(service.get("secrets", []))
        talks_to_influxdb = service["command"][0] in ("worker", "buckets")
        for route_name, route in settings.routes.items() if talks_to_influxdb else ():
            if route.token_file is not None:
                assert route.token_file.parent == Path("/run/secrets"), route_name
                assert route.token_file.name in mounted, f"{name}/{service_name}: {route.token_file}"
        for bucket in settings.buckets.values():
            assert bucket.route in settings.routes


def test_the_flower_and_redis_passwords_are_required() -> None:
    for missing in ("FLOWER_PASSWORD", "REDIS_PASSWORD"):
        env = {k: v for k, v in REQUIRED.items() if k != missing}
        with pytest.raises(ValueError, match=missing):
            compose(MAIN, env=env)


def test_redis_has_aof_a_password_and_a_healthcheck_that_checks_the_answer() -> None:
    config = compose(MAIN)
    redis = config["services"]["redis"]
    command = redis["command"]
    password = REQUIRED["REDIS_PASSWORD"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--requirepass") + 1] == password
    assert _env(redis)["REDISCLI_AUTH"] == password  # the healthcheck's redis-cli authenticates
    # `redis-cli ping` exits 0 on "NOAUTH Authentication required.": the answer itself is compared.
    kind, check = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and re.search(r'"\$\(redis-cli ping\)" = PONG', check), check
    for service_name, service in _tsbatch_services(config):
        url = _env(service)["TSBATCH_REDIS__URL"]
        assert url == f"redis://:{password}@redis:6379/0", service_name
        if service["command"][0] != "buckets":  # the one service that needs no Redis
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", service_name


def test_the_redis_command_and_healthcheck_work_on_a_real_redis_server(tmp_path: Path) -> None:
    """The compose file's redis-server arguments, on a real redis-server here, and its healthcheck run
    by sh as Docker would (redis-cli pointed at this server's port): it passes with the password only."""
    redis = compose(MAIN)["services"]["redis"]
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    assert server and cli, "redis-server and redis-cli: make setup"
    port = free_port()
    argv = [server, *redis["command"][1:], "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--dir", str(tmp_path), "--daemonize", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "redis-cli").write_text(f'#!/bin/sh\nexec {cli} -p {port} "$@"\n')
    (shim / "redis-cli").chmod(0o755)
    check = redis["healthcheck"]["test"][1]

    def healthy(auth: str | None) -> bool:
        env = {"PATH": f"{shim}:{os.environ['PATH']}"} | ({"REDISCLI_AUTH": auth} if auth else {})
        return subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=10).returncode == 0

    try:
        wait_for(lambda: healthy(_env(redis)["REDISCLI_AUTH"]), timeout=30, what="redis-server")
        assert not healthy(None) and not healthy("wrong")
        # What the healthcheck guards against: without the password, redis-cli still exits 0.
        bare = subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, text=True, timeout=10)
        assert bare.returncode == 0 and "NOAUTH" in bare.stdout + bare.stderr
        assert (tmp_path / "appendonlydir").is_dir()  # AOF on
    finally:
        proc.terminate()
        proc.wait(10)


# --- ports, volumes, secrets --------------------------------------------------------------------------


def test_published_ports_match_the_settings(tmp_path: Path) -> None:
    config = compose(MAIN, EXPOSE)
    services = config["services"]
    published = {n: [_port(p) for p in s.get("ports", [])] for n, s in services.items()}

    flower = _settings_for(services["flower"], tmp_path / "flower").flower
    assert flower.address == "0.0.0.0"  # inside the container; the host side is loopback
    assert published["flower"] == [("127.0.0.1", flower.port)]

    worker = _settings_for(services["worker"], tmp_path / "worker")
    # Scaled workers publish nothing (N replicas cannot share a host port): Prometheus scrapes them
    # over the compose network, on the port they are told to listen on, on every interface.
    assert not published.get("worker") and worker.metrics.address == "0.0.0.0"
    assert [int(p) for p in services["worker"]["expose"]] == [worker.metrics.port] and worker.metrics.port
    route = worker.routes["hot"]
    host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", route.url).groups()  # type: ignore[union-attr]
    assert host in services and published[host][0][1] == int(port)
    redis_host, redis_port = re.search(r"@([a-z]+):(\d+)/", worker.redis.url.get_secret_value()).groups()  # type: ignore[union-attr]
    assert published[redis_host] == [("0.0.0.0", int(redis_port))]  # compose.expose.yml

    prom_args = services["prometheus"]["command"]
    listen = next(a for a in prom_args if a.startswith("--web.listen-address="))
    assert published["prometheus"] == [("127.0.0.1", int(listen.rsplit(":", 1)[1]))]
    assert published["grafana"] == [("127.0.0.1", 3000)]
    # Without the overlay, Redis is not published at all.
    assert not compose(MAIN)["services"]["redis"].get("ports")

    node = compose(NODE)["services"]["worker"]
    node_metrics = _settings_for(node, tmp_path / "node").metrics
    assert [_port(p)[1] for p in node["ports"]] == [node_metrics.port] == [worker.metrics.port]


def test_named_volumes_are_declared_and_bind_mounts_exist(stack) -> None:
    name, config = stack
    base = NODE.parent if name == "worker-node" else ROOT
    declared = set(config.get("volumes") or {})
    used = set()
    for service_name, service in config["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith(("./", "../")):
                assert (base / source).exists(), f"{name}/{service_name}: {source}"
            elif not source.startswith("/"):
                assert source in declared, f"{name}/{service_name}: volume {source} not declared"
                used.add(source)
    assert used == declared, f"{name}: declared but unused: {declared - used}"


def test_secret_files_exist_as_templates_and_every_secret_used_is_declared(stack) -> None:
    name, config = stack
    base = NODE.parent if name == "worker-node" else ROOT
    declared = config.get("secrets") or {}
    for secret, spec in declared.items():
        path = base / spec["file"]
        # The real file is the operator's (gitignored); the repository holds its template.
        template = path.with_name(path.name + ".example")
        assert template.is_file(), f"{name}: secret {secret}: {template} missing"
        assert path.parent.resolve() == (ROOT / "deploy" / "secrets").resolve()
    for service_name, service in config["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), f"{name}/{service_name}: {mounted - set(declared)}"
        # Every /run/secrets/NAME a service reads (token files, *_FILE variables) is mounted there. The
        # beat and Flower load the routes (a [jobs.*] entry is checked against them) but never read a
        # token: they mount none.
        reads_tokens = service.get("command", [""])[0] not in ("beat", "flower")
        for var, value in _env(service).items():
            if var.startswith("TSBATCH_ROUTES__") and not reads_tokens:
                continue
            for used in re.findall(r"/run/secrets/([a-z0-9-]+)", value):
                assert used in mounted, f"{name}/{service_name}: /run/secrets/{used}"


def test_stop_grace_period_is_above_the_drain_time(stack, tmp_path: Path) -> None:
    name, config = stack
    worker = config["services"]["worker"]
    s = _settings_for(worker, tmp_path)
    w, timeout = s.worker, s.routes["hot"].timeout_s
    # The longest a chunk in hand can take to finish once SIGTERM arrives, short of the server hanging
    # forever: a batch that times out on every fast retry, with the longest wait between them. Past
    # that, the chunk is handed back to Celery (its slot freed), so the drain ends.
    drain = (w.batch_retries + 1) * timeout + w.batch_retries * w.batch_retry_max_wait_s
    assert _seconds(worker["stop_grace_period"]) > drain, f"{name}: drain {drain:g} s"


# --- Prometheus and Grafana ---------------------------------------------------------------------------


def test_prometheus_finds_every_worker_by_dns_on_the_metrics_port(tmp_path: Path) -> None:
    config = compose(MAIN)
    services = config["services"]
    metrics = _settings_for(services["worker"], tmp_path).metrics
    prom = yaml.safe_load(PROMETHEUS.read_text())
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "tsbatch"]
    assert "static_configs" not in job  # a static service name reaches one random replica
    [sd] = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == metrics.port
    assert set(sd["names"]) <= {"worker", "tasks.worker"} and sd["names"]
    # The alert rules are loaded, and their `up{job="tsbatch"}` names this job.
    assert prom["rule_files"] == ["alerts.yml"]
    assert 'job="tsbatch"' in (PROMETHEUS.parent / "alerts.yml").read_text()
    # The folder is mounted where --config.file looks.
    args = services["prometheus"]["command"]
    config_file = next(a.split("=", 1)[1] for a in args if a.startswith("--config.file="))
    assert f"./deploy/prometheus:{Path(config_file).parent}:ro" in services["prometheus"]["volumes"]
    assert Path(config_file).name == PROMETHEUS.name


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    run = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 1 rule files found" in run.stdout + run.stderr


def _datasources() -> list[dict[str, Any]]:
    found = []
    for path in sorted((PROVISIONING / "datasources").glob("*.yml")):
        found += yaml.safe_load(path.read_text())["datasources"]
    return found


def _dashboard_datasources(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for v in node.values():
            yield from _dashboard_datasources(v)
    elif isinstance(node, list):
        for v in node:
            yield from _dashboard_datasources(v)


def test_the_dashboards_datasources_are_the_provisioned_ones() -> None:
    provisioned = _datasources()
    uids = {d["uid"] for d in provisioned}
    types = {d["type"] for d in provisioned}
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {
        v["name"]: v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "datasource"
    }
    asked = list(_dashboard_datasources(dashboard))
    assert asked
    for ds in asked:
        uid = ds.get("uid", "")
        var = re.fullmatch(r"\$\{?(\w+)\}?", uid)
        if var:
            # A datasource variable offers the datasources of its type: one must be provisioned.
            assert variables[var.group(1)] == ds["type"] and ds["type"] in types, ds
        else:
            assert uid in uids, ds
    assert {"prometheus", "influxdb"} <= types


def test_grafana_is_provisioned_with_prometheus_influxdb_flux_and_the_dashboard(tmp_path: Path) -> None:
    config = compose(MAIN)
    services = config["services"]
    grafana = services["grafana"]
    by_type = {d["type"]: d for d in _datasources()}
    prom, influx = by_type["prometheus"], by_type["influxdb"]
    listen = next(a for a in services["prometheus"]["command"] if a.startswith("--web.listen-address="))
    assert prom["url"] == f"http://prometheus:{listen.rsplit(':', 1)[1]}" and prom["isDefault"] is True
    route = _settings_for(services["worker"], tmp_path).routes["hot"]
    assert influx["jsonData"]["version"] == "Flux"
    assert (influx["url"], influx["jsonData"]["organization"], influx["jsonData"]["defaultBucket"]) == (
        route.url,
        route.org,
        route.bucket,
    )
    env = _env(services["influxdb"])
    assert (env["DOCKER_INFLUXDB_INIT_ORG"], env["DOCKER_INFLUXDB_INIT_BUCKET"]) == (route.org, route.bucket)
    # The datasource's token is a file Grafana is given as a secret, never a literal.
    token = re.fullmatch(r"\$__file\{/run/secrets/([a-z0-9-]+)\}", influx["secureJsonData"]["token"])
    assert token and token.group(1) in grafana["secrets"]
    # Provisioning and the dashboard are mounted where the provider looks.
    volumes = grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "tsbatch.yml").read_text())["providers"]
    dashboard_target = next(
        v.split(":")[1] for v in volumes if v.startswith("./deploy/grafana/tsbatch.json:")
    )
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    assert (
        _env(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"].removeprefix("/run/secrets/") in grafana["secrets"]
    )


def test_buckets_are_applied_before_the_workers_start() -> None:
    services = compose(MAIN)["services"]
    buckets = services["buckets"]
    assert buckets["command"] == ["buckets", "apply"] and buckets["restart"] == "no"
    assert buckets["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    # With the operator token: the workers' may be write-only.
    assert _env(buckets)["TSBATCH_ROUTES__HOT__TOKEN_FILE"] == "/run/secrets/influx-admin-token"
