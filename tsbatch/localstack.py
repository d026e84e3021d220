"""A local stack on free ports: redis-server, VictoriaMetrics (speaks the InfluxDB v2 write API),
tsbatch workers and Flower. ``make demo`` and the test fixtures both use it.

Everything runs from a working directory (data, logs, the generated settings file) and every process
is stopped by ``Stack.stop()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until ``check()`` holds; a process that never gets ready is stopped, not left behind."""
    try:
        _wait_ready(check, what, proc, log, timeout)
    except BaseException:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        raise


def _wait_ready(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the process and, for a prefork worker, its children too."""
        for child in children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.stop(signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (no pgrep: procps is not on every minimal machine)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split after ')'.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return sorted(found)


def _spawn(
    name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 (owned by the child for its lifetime)
    try:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ), start_new_session=True
        )
    finally:
        out.close()


def start_redis(
    workdir: Path,
    *,
    port: int | None = None,
    appendonly: bool = False,
    also_bind: Sequence[str] = (),
    password: str = "",
) -> Process:
    """A redis-server on 127.0.0.1 and, with ``also_bind``, on those addresses too (e.g. the root side of
    a veth pair, for a worker in a network namespace). Protected mode refuses every client that is not on
    loopback, so it is off when other addresses are bound: bind only addresses private to the machine.
    With ``password``, clients must authenticate (``requirepass``; given in a config file on stdin,
    never in argv, which ``ps`` shows)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    port = port or free_port()
    data = workdir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / f"redis-{port}.log"
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        *also_bind,
        *(["--protected-mode", "no"] if also_bind else []),
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
    ]
    if password:
        conf = data / "redis-auth.conf"
        conf.write_text(f"requirepass {json.dumps(password)}\n")
        conf.chmod(0o600)
        argv.insert(1, str(conf))
    proc = _spawn("redis", argv, log)
    client = redis.Redis(port=port, socket_timeout=1, password=password or None)
    try:
        _wait(client.ping, "redis-server", proc, log, STARTUP_TIMEOUT_S)
    finally:
        client.close()
    return Process("redis", proc, log, port)


def start_victoria(workdir: Path, *, port: int | None = None) -> Process:
    binary = shutil.which("victoria-metrics") or shutil.which("victoria-metrics-prod")
    if binary is None:
        raise RuntimeError("victoria-metrics not found: apt-get install victoria-metrics")
    port = port or free_port()
    data = workdir / f"vm-{port}"
    log = workdir / f"vm-{port}.log"
    # -retentionPeriod: without it VictoriaMetrics silently drops timestamps older than a month.
    argv = [
        binary,
        f"-storageDataPath={data}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
        "-search.disableCache",
        "-loggerLevel=WARN",
    ]
    proc = _spawn("victoria-metrics", argv, log)
    _wait(
        lambda: http_get(f"http://127.0.0.1:{port}/health", 1) is not None,
        "victoria-metrics",
        proc,
        log,
        STARTUP_TIMEOUT_S,
    )
    return Process("victoria-metrics", proc, log, port)


def vm_export(base_url: str, match: str = '{__name__=~".+"}') -> Iterator[dict[str, Any]]:
    """Every series VictoriaMetrics holds that matches, as {metric, values, timestamps} (ms)."""
    http_get(f"{base_url}/internal/force_flush")
    query = urllib.parse.urlencode({"match[]": match})
    body = http_get(f"{base_url}/api/v1/export?{query}", timeout=300)
    for line in body.splitlines():
        if line.strip():
            yield json.loads(line)


def vm_export_settled(
    base_url: str,
    match: str = '{__name__=~".+"}',
    *,
    expect_samples: int | None = None,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """The export once it has caught up: VictoriaMetrics acknowledges rows before every one of them is
    searchable, and an export right after a large ingest was seen to hold 1.5M of 2M samples.

    With ``expect_samples`` (e.g. ``vm_rows_inserted``), wait until that many samples are visible;
    without it, until two reads half a second apart agree. Either way give up after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    previous: list[dict[str, Any]] | None = None
    while True:
        current = list(vm_export(base_url, match))
        count = sum(len(row["timestamps"]) for row in current)
        settled = count >= expect_samples if expect_samples is not None else current == previous
        if settled or time.monotonic() > deadline:
            return current
        previous = current
        time.sleep(0.5)


def vm_rows_inserted(base_url: str) -> int:
    """Rows VictoriaMetrics has accepted over the InfluxDB protocol since it started (duplicates too)."""
    total = 0
    for line in http_get(f"{base_url}/metrics").decode().splitlines():
        if line.startswith('vm_rows_inserted_total{type="influx"}'):
            total += int(float(line.split()[-1]))
    return total


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def to_toml(settings: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for a settings file: tables, strings, numbers, booleans and lists."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in settings.items() if not isinstance(v, Mapping)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in settings.items():
        if isinstance(v, Mapping):
            out.append(to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


@dataclass
class Stack:
    """A running local stack. ``config`` is the settings file every process reads."""

    workdir: Path
    redis: Process
    routes: dict[str, Process]
    config: Path
    settings: dict[str, Any] = field(default_factory=dict)
    workers: list[Process] = field(default_factory=list)
    beats: list[Process] = field(default_factory=list)
    flower: Process | None = None
    redis_password: str = ""
    redis_appendonly: bool = False

    @property
    def redis_url(self) -> str:
        auth = f":{urllib.parse.quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis.port}/0"

    def restart_redis(self, *, down_s: float = 0.0) -> None:
        """Stop Redis (SIGTERM: with AOF on, nothing written is lost), wait, start it again on the same
        port, data directory and password."""
        self.redis.stop()
        time.sleep(down_s)
        self.redis = start_redis(
            self.workdir,
            port=self.redis.port,
            appendonly=self.redis_appendonly,
            password=self.redis_password,
        )

    def write_config(self) -> None:
        self.config.write_text(to_toml(self.settings))

    def point_route(self, name: str, url: str) -> None:
        """Send a route's writes elsewhere (e.g. through a fault-injection proxy) for workers started next."""
        self.settings["routes"][name]["url"] = url
        self.write_config()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TSBATCH_")}
        env["TSBATCH_CONFIG"] = str(self.config)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def tsbatch(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tsbatch.cli", *args]

    def start_worker(
        self,
        *,
        concurrency: int = 1,
        name: str | None = None,
        pool: str = "prefork",
        extra_env: Mapping[str, str] | None = None,
        netns: str | None = None,
        args: Sequence[str] = (),
    ) -> Process:
        """Start a worker and wait until it is ready. ``netns``: run it in that network namespace
        (``ip netns exec``, which execs the worker: the process's pid is the worker's own); ``args``:
        more ``tsbatch worker`` options."""
        name = name or f"w{len(self.workers) + 1}"
        log = self.workdir / f"worker-{name}.log"
        argv = self.tsbatch(
            "worker", "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--pool", pool, *args
        )
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = _spawn(name, argv, log, {**self.env(), **(extra_env or {})})
        worker = Process(name, proc, log)
        _wait(lambda: "ready." in log.read_text(errors="replace"), f"worker {name}", proc, log, 60)
        self.workers.append(worker)
        return worker

    def start_beat(self) -> Process:
        """Start ``tsbatch beat`` (any number of them may run) and wait until it is sending ticks."""
        name = f"beat{len(self.beats) + 1}"
        log = self.workdir / f"{name}.log"
        proc = _spawn(name, self.tsbatch("beat", "--loglevel", "debug"), log, self.env())
        beat = Process(name, proc, log)
        _wait(lambda: "beat: Starting" in log.read_text(errors="replace"), name, proc, log, 60)
        self.beats.append(beat)
        return beat

    def start_flower(self, *, user: str, password: str) -> Process:
        port = free_port()
        log = self.workdir / "flower.log"
        env = {**self.env(), "TSBATCH_FLOWER__USER": user, "TSBATCH_FLOWER__PASSWORD": password}
        proc = _spawn("flower", self.tsbatch("flower", "--port", str(port)), log, env)
        flower = Process("flower", proc, log, port)

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        _wait(listening, "flower", proc, log, 60)
        self.flower = flower
        return flower

    def stop(self) -> None:
        for p in [*self.beats, *self.workers, *([self.flower] if self.flower else [])]:
            p.stop(timeout=60)
        for p in [*self.routes.values(), self.redis]:
            p.stop()


def start_stack(
    workdir: Path,
    *,
    roots: list[Path],
    routes: tuple[str, ...] = ("default",),
    worker: Mapping[str, Any] | None = None,
    producer: Mapping[str, Any] | None = None,
    ledger: Mapping[str, Any] | None = None,
    redis_appendonly: bool = False,
    redis_also_bind: Sequence[str] = (),
    redis_password: str = "",
    logging: Mapping[str, Any] | None = None,
) -> Stack:
    """Redis and one VictoriaMetrics per route, plus the settings file that points at them.

    Logs are text unless ``logging`` says otherwise: the processes write to files here, where the
    default would be JSON, and people and scripts read these logs line by line."""
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[Process] = []
    try:
        red = start_redis(
            workdir, appendonly=redis_appendonly, also_bind=redis_also_bind, password=redis_password
        )
        started.append(red)
        vms = {}
        for name in routes:
            vms[name] = start_victoria(workdir)
            started.append(vms[name])
    except BaseException:
        for p in started:
            p.stop()
        raise
    settings: dict[str, Any] = {
        "redis": {"url": "(below)"},
        "sources": {"roots": [str(r) for r in roots]},
        "routes": {
            n: {"kind": "victoriametrics", "url": vm.url, "org": "local", "bucket": n, "token": "local-token"}
            for n, vm in vms.items()
        },
        "worker": dict(worker or {}),
        "producer": dict(producer or {}),
        "ledger": dict(ledger or {}),
        "logging": dict(logging or {"format": "text"}),
    }
    stack = Stack(
        workdir=workdir,
        redis=red,
        routes=vms,
        config=workdir / "tsbatch.toml",
        settings=settings,
        redis_password=redis_password,
        redis_appendonly=redis_appendonly,
    )
    settings["redis"]["url"] = stack.redis_url
    stack.write_config()
    return stack
