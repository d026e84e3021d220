"""The single settings registry.

Sources, highest priority first: keyword arguments, environment variables ``TSBATCH_...`` (nested with
``__``, e.g. ``TSBATCH_ROUTES__HOT__URL``), the TOML file named by ``TSBATCH_CONFIG``, defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config import constants

CONFIG_ENV = "TSBATCH_CONFIG"


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisSettings(_Section):
    # A secret: the URL may carry the password (redis://:password@host:6379/0).
    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = constants.KEY_PREFIX

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class SourceSettings(_Section):
    roots: list[Path] = Field(default_factory=list)
    # URLs a producer may read (``tsbatch produce s3://... --format parquet``): each URL must start with
    # one of these, as every path must lie beneath a root.
    url_roots: list[str] = Field(default_factory=list)

    @field_validator("roots")
    @classmethod
    def _existing_absolute_dirs(cls, roots: list[Path]) -> list[Path]:
        # Checked at load, not at the first file: a typo in a root otherwise surfaces as every file
        # "outside the source roots", on every worker (issue #8).
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"{root}: must be an absolute path")
            if not root.is_dir():
                raise ValueError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
        return roots


_DURATION_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)(w|d|h|m|s)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:w|d|h|m|s))+")


def parse_duration(value: object) -> int:
    """Whole seconds from ``"90s"``, ``"5m"``, ``"1h30m"``, ``"1d"``, ``"2w"`` or an int of seconds.

    Months and years are refused: their length varies, and a window's bounds must be arithmetic on the
    epoch (DESIGN.md "Windows")."""
    if isinstance(value, bool):
        raise ValueError("a duration such as '5m', '90s', '1h'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and _DURATION_WHOLE.fullmatch(value.strip()):
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(value))
    else:
        raise ValueError(f"{value!r} is not a duration such as '5m', '90s', '1h30m', '1d' (no months)")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_duration(seconds: int) -> str:
    """``parse_duration``'s inverse, largest units first: 2592000 -> ``"30d"``, 5400 -> ``"1h30m"``."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS.items():
        if unit == "w":
            continue  # "30d" reads better than "4w2d"
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[int, BeforeValidator(parse_duration)]
RouteKind = Literal["influxdb2", "victoriametrics"]
JobKind = Literal["downsample", "copy", "archive"]
Aggregate = Literal[
    "mean", "min", "max", "count", "sum", "first", "last", "stddev", "p50", "p90", "p95", "p99"
]
AGGREGATES: tuple[Aggregate, ...] = (
    "mean",
    "min",
    "max",
    "count",
    "sum",
    "first",
    "last",
    "stddev",
    "p50",
    "p90",
    "p95",
    "p99",
)


class RouteSettings(_Section):
    """One InfluxDB v2 target (``influxdb2``) or a VictoriaMetrics server speaking its write API
    (``victoriametrics``: read back through ``/api/v1/export``). Descriptors carry the route's name, never
    its URL or token."""

    kind: RouteKind = "influxdb2"
    url: str
    org: str
    bucket: str
    token: SecretStr | None = None
    token_file: Path | None = None
    timeout_s: float = Field(default=constants.WRITE_TIMEOUT_S, gt=0)
    read_timeout_s: float = Field(default=constants.READ_TIMEOUT_S, gt=0)

    @field_validator("url")
    @classmethod
    def _http_scheme(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_token_source(self) -> RouteSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        # A forgotten token otherwise shows up only as 401s from every worker. A server without
        # authentication (VictoriaMetrics, a local InfluxDB 1.x) is said so explicitly: token = "".
        if self.token is None and self.token_file is None:
            raise ValueError('give token or token_file (token = "" for a server without authentication)')
        return self


class WorkerSettings(_Section):
    concurrency: int = Field(default=2, ge=1)
    writes_in_flight: int = Field(default=constants.WRITES_IN_FLIGHT, ge=1)
    batch_lines: int = Field(default=constants.BATCH_LINES, ge=1)
    columnar: bool = constants.COLUMNAR
    gzip_level: int = Field(default=constants.GZIP_LEVEL, ge=0, le=9)
    lease_ttl_s: float = Field(default=constants.LEASE_TTL_S, gt=0)
    heartbeat_s: float = Field(default=constants.HEARTBEAT_S, gt=0)
    visibility_timeout_s: int = Field(default=constants.VISIBILITY_TIMEOUT_S, ge=1)
    unacked_restore_interval_s: int = Field(default=constants.UNACKED_RESTORE_INTERVAL_S, ge=1)
    max_line_bytes: int = Field(default=constants.MAX_LINE_BYTES, ge=64)
    max_retries: int = Field(default=constants.TASK_MAX_RETRIES, ge=0)
    max_attempts: int = Field(default=constants.MAX_ATTEMPTS, ge=1)
    retry_base_s: float = Field(default=constants.RETRY_BASE_S, gt=0)
    retry_max_s: float = Field(default=constants.RETRY_MAX_S, gt=0)
    batch_retries: int = Field(default=constants.BATCH_RETRIES, ge=0)
    batch_retry_max_wait_s: float = Field(default=constants.BATCH_RETRY_MAX_WAIT_S, ge=0)
    retry_after_max_s: float = Field(default=constants.RETRY_AFTER_MAX_S, gt=0)
    breaker_threshold: int = Field(default=constants.BREAKER_THRESHOLD, ge=1)
    breaker_cooldown_s: float = Field(default=constants.BREAKER_COOLDOWN_S, gt=0)

    @field_validator("retry_max_s")
    @classmethod
    def _retry_inside_visibility(cls, v: float, info: ValidationInfo) -> float:
        # A retry is an ETA message that stays unacknowledged while it waits: a countdown longer than
        # the visibility timeout gets it delivered again, in parallel (celery#5935).
        visibility = info.data.get("visibility_timeout_s")
        if visibility is not None and v > visibility:
            raise ValueError(f"{v:g} s is above worker.visibility_timeout_s ({visibility} s)")
        return v

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> WorkerSettings:
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError("heartbeat_s must be shorter than lease_ttl_s")
        if self.max_attempts <= self.max_retries:
            raise ValueError("max_attempts must be greater than max_retries")
        if self.retry_after_max_s >= self.visibility_timeout_s:
            raise ValueError("retry_after_max_s must be shorter than visibility_timeout_s")
        return self


class ProducerSettings(_Section):
    chunk_lines: int = Field(default=constants.CHUNK_LINES, ge=1)
    taper: bool = constants.TAPER
    max_queue_depth: int = Field(default=constants.MAX_QUEUE_DEPTH, ge=1)
    max_chunk_bytes: int = Field(default=constants.MAX_CHUNK_BYTES, ge=1 << 16)
    queue: str = constants.QUEUE
    preflight_rows: int = Field(default=constants.PREFLIGHT_ROWS, ge=1)


class LedgerSettings(_Section):
    retention_days: float = Field(default=constants.LEDGER_RETENTION_DAYS, gt=0)
    dlq_maxlen: int = Field(default=constants.DLQ_MAXLEN, ge=100)
    raw_keep_bytes: int = Field(default=constants.RAW_KEEP_BYTES, ge=64)
    republish_after_s: float = Field(default=constants.REPUBLISH_AFTER_S, gt=0)
    sweep_interval_s: float = Field(default=constants.SWEEP_INTERVAL_S, gt=0)


def _no_control(name: str, what: str) -> str:
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ValueError(f"{what} {name!r}: must be non-empty, without control characters")
    return name


class JobSettings(_Section):
    """A scheduled job over UTC-aligned windows ``[k*every, (k+1)*every)`` (docs/WINDOWS.md).

    Everything that decides what a window writes is its *definition* (``definition()``): it is hashed
    into every window's key and carried in its descriptor. ``offset``, ``start`` and ``recheck`` only
    decide when windows run."""

    kind: JobKind
    source: str
    target: str = ""  # a route (downsample, copy)
    url: str = ""  # archive: an fsspec URL (file:///srv/archive, s3://bucket/prefix, gcs://...)
    delete_after_archive: bool = False
    measurement: str
    fields: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    every: Duration
    offset: Duration = 0
    aggregates: list[Aggregate] = Field(default_factory=list)
    mode: Literal["worker", "server"] = "worker"
    start: datetime | None = None
    output_measurement: str | None = None
    recheck: Duration = 0
    recheck_interval: Duration = 0  # how often a recent window is re-read; 0: once per window length

    @field_validator("every")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be at least 1s")
        return v

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
        return v.astimezone(UTC) if v is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> JobSettings:
        self._names_writable()
        if self.kind == "downsample":
            if not self.aggregates:
                raise ValueError("aggregates: a downsample needs at least one (mean, min, max, count, ...)")
            if len(set(self.aggregates)) != len(self.aggregates):
                raise ValueError("aggregates: listed twice")
        elif self.aggregates or self.output_measurement:
            raise ValueError("aggregates and output_measurement are for kind = 'downsample'")
        self._destination()
        return self

    def _names_writable(self) -> None:
        _no_control(self.measurement, "measurement")
        for f in self.fields:
            _no_control(f, "field")
        for k, v in self.tags.items():
            _no_control(k, "tag")
            _no_control(v, "tag value")
        if self.output_measurement is not None:
            _no_control(self.output_measurement, "output_measurement")
        if len(set(self.fields)) != len(self.fields):
            raise ValueError("fields: listed twice")

    def _destination(self) -> None:
        if self.kind == "archive":
            if not self.url or "://" not in self.url:
                raise ValueError(
                    "url: an archive needs an fsspec URL such as file:///srv/archive or s3://b/p"
                )
            if self.target or self.mode == "server":
                raise ValueError("an archive has a url, no target, and runs in the workers (mode = 'worker')")
        else:
            if not self.target:
                raise ValueError(f"target: a {self.kind} needs a target route")
            if self.url or self.delete_after_archive:
                raise ValueError("url and delete_after_archive are for kind = 'archive'")

    def definition(self) -> dict[str, Any]:
        """What decides a window's output: hashed into its key, carried in its descriptor."""
        return {
            "kind": self.kind,
            "source": self.source,
            "target": self.target,
            "measurement": self.measurement,
            "fields": sorted(self.fields),
            "tags": dict(sorted(self.tags.items())),
            "every": self.every,
            "aggregates": list(self.aggregates),
            "mode": self.mode,
            "output_measurement": self.output_measurement or self.measurement,
            "url": self.url.rstrip("/"),
        }


class BucketSettings(_Section):
    """A bucket declared as code (``tsbatch buckets plan|apply``): its route names the server, org and
    bucket; ``retention`` 0 keeps data for ever."""

    route: str
    retention: Duration = 0
    shard_group: Duration = 0  # 0: the server's default for the retention
    description: str = ""
    # ``tsbatch jobs`` warns when a window not yet archived expires within this long.
    warn_before: Duration = constants.EXPIRY_WARNING_S

    @model_validator(mode="after")
    def _durations_influxdb_accepts(self) -> BucketSettings:
        # InfluxDB refuses these itself, but only at `apply`, bucket by bucket: say so at load.
        if 0 < self.retention < constants.MIN_BUCKET_RETENTION_S:
            raise ValueError("retention: InfluxDB keeps data at least 1h (or 0: for ever)")
        if self.retention and self.shard_group > self.retention:
            raise ValueError("shard_group: must not be longer than the retention")
        return self


class SchedulerSettings(_Section):
    tick_s: float = Field(default=constants.TICK_S, gt=0)
    max_windows_per_tick: int = Field(default=constants.MAX_WINDOWS_PER_TICK, ge=1)
    schedule_dir: Path | None = None


class FlowerSettings(_Section):
    port: int = 5555
    address: str = "127.0.0.1"
    user: str = "admin"
    password: SecretStr | None = None
    # Signs Flower's cookies; set one value for every Flower behind a load balancer. Unset: a random one
    # per start (sessions end with a restart, which is all basic authentication needs).
    cookie_secret: SecretStr | None = None


class MetricsSettings(_Section):
    """Prometheus metrics of a worker, served by its main process (docs/OPERATIONS.md "Metrics").

    ``dir``: the prometheus_client multiprocess directory; wiped at each worker start, so it must belong
    to one worker. Unset: a fresh temporary directory, removed when the worker stops."""

    port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics (and no multiprocess files)
    address: str = "127.0.0.1"
    dir: Path | None = None
    reap_interval_s: float = Field(default=constants.METRICS_REAP_INTERVAL_S, gt=0)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LoggingSettings(_Section):
    """How every process logs (tsbatch/logs.py). ``format``: ``json`` (one object per line) or ``text``;
    unset, text when the process's stderr is a terminal and JSON otherwise (a file, a pipe, journald, a
    container's log driver). ``level``: the worker's, beat's and Flower's (a ``--loglevel`` on their
    command line wins); the other commands log warnings and errors only."""

    format: Literal["json", "text"] | None = None
    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        if v.upper() not in LOG_LEVELS:
            raise ValueError(f"{v!r}: one of {', '.join(LOG_LEVELS)}")
        return v.upper()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TSBATCH_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    sources: SourceSettings = Field(default_factory=SourceSettings)
    routes: dict[str, RouteSettings] = Field(default_factory=dict)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    producer: ProducerSettings = Field(default_factory=ProducerSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    jobs: dict[str, JobSettings] = Field(default_factory=dict)
    buckets: dict[str, BucketSettings] = Field(default_factory=dict)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    @model_validator(mode="after")
    def _buckets_use_known_routes(self) -> Settings:
        declared: dict[tuple[str, str, str], str] = {}
        for name, bucket in sorted(self.buckets.items()):
            if bucket.route not in self.routes:
                known = ", ".join(sorted(self.routes)) or "none configured"
                raise ValueError(f"buckets.{name}.route: unknown route {bucket.route!r} (known: {known})")
            route = self.routes[bucket.route]
            where = (route.url, route.org, route.bucket)
            if where in declared:
                # Two declarations of one bucket would undo each other at every `tsbatch buckets apply`.
                raise ValueError(f"buckets.{name}: declares the same bucket as buckets.{declared[where]}")
            declared[where] = name
        return self

    @model_validator(mode="after")
    def _jobs_use_known_routes(self) -> Settings:
        # At load, so a typo stops every command (the beat, the workers, the CLI) with the job's name.
        for name, job in self.jobs.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"jobs.{name}: a job name is 1-64 letters, digits, '_', '.' or '-'")
            for side in ("source", "target") if job.kind != "archive" else ("source",):
                route = getattr(job, side)
                if route not in self.routes:
                    known = ", ".join(sorted(self.routes)) or "none configured"
                    raise ValueError(f"jobs.{name}.{side}: unknown route {route!r} (known: {known})")
            self._routes_fit(name, job)
        return self

    def _routes_fit(self, name: str, job: JobSettings) -> None:
        src = self.routes[job.source]
        if job.kind == "archive":
            if job.delete_after_archive and src.kind != "influxdb2":
                # VictoriaMetrics deletes whole series, not a time range: it would lose unarchived data.
                raise ValueError(f"jobs.{name}: delete_after_archive needs an influxdb2 source route")
            return
        dst = self.routes[job.target]
        if job.kind == "copy" and (src.url, src.org, src.bucket) == (dst.url, dst.org, dst.bucket):
            raise ValueError(f"jobs.{name}: source and target are the same bucket: a copy would do nothing")
        if job.mode == "server":
            if src.kind != "influxdb2" or dst.kind != "influxdb2":
                raise ValueError(f"jobs.{name}: mode = 'server' runs Flux: both routes must be influxdb2")
            if (src.url, src.org) != (dst.url, dst.org):
                # Flux's to() could reach another server only with a token inside the query text.
                raise ValueError(
                    f"jobs.{name}: mode = 'server' needs source and target on one server and org"
                )

    def route(self, name: str) -> RouteSettings:
        try:
            return self.routes[name]
        except KeyError:
            known = ", ".join(sorted(self.routes)) or "none configured"
            raise ConfigError(f"routes.{name}: unknown route (known: {known})") from None

    def job(self, name: str) -> JobSettings:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none configured"
            raise ConfigError(f"jobs.{name}: unknown job (known: {known})") from None


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir() -> Path | None:
    """prometheus_client's multiprocess directory, as its own code reads it (from the environment, set
    by ``tsbatch worker`` before Celery forks: tsbatch/metricsdir.py)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "settings"
        msg = e["msg"].removeprefix("Value error, ")  # pydantic's prefix says nothing to a user
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; raise ``ConfigError`` naming the setting that is wrong."""
    path = os.environ.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
    except (OSError, ValueError) as e:  # unreadable or malformed TOML
        raise ConfigError(f"{CONFIG_ENV}={path}: {e}") from None
