"""``tsbatch``: a thin command line over the producer API and the Celery worker.

tsbatch worker --concurrency 2
tsbatch produce /srv/telemetry/*.lp --route hot --wait
tsbatch produce s3://archive/cpu/ --format parquet --route hot
tsbatch status JOB
tsbatch dlq list --job JOB
tsbatch routes
tsbatch routes clear hot
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from pydantic import SecretStr, ValidationError

from config import ConfigError, Settings, load_settings
from tsbatch import logs
from tsbatch.descriptor import FIELD_KINDS, FORMATS, PRECISIONS, FieldSpec, Format, Mapping, Precision
from tsbatch.errors import RedisUnreachable
from tsbatch.ledger import JobStatus, check_reachable
from tsbatch.sources import is_url
from tsbatch.times import AMBIGUOUS

if TYPE_CHECKING:
    from tsbatch.breaker import RouteGuard, RouteState


@contextmanager
def _user_errors() -> Iterator[None]:
    """Configuration and input mistakes end the program with one clear line, not a traceback."""
    try:
        yield
    except ConfigError as e:
        raise click.ClickException(f"configuration: {e}") from None
    except RedisUnreachable as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.ClickException(str(e)) from None


# C0 controls but tab, DEL, C1 controls: ESC and CSI among them, which a terminal would act on.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _printable(text: object) -> str:
    """Untrusted text (a file's bytes, a file name) made safe for a terminal: each control character
    becomes a ``\\xNN`` escape; printable text, tabs and backslashes are left as they are."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _settings() -> Settings:
    with _user_errors():
        settings = load_settings()
    # What a command has to say is its output; its logs only say what went wrong (worker, beat and
    # Flower log at logging.level). Configured here, as soon as the secrets to mask are known.
    logs.configure(settings, level="WARNING")
    return settings


def _producer(settings: Settings | None = None) -> Any:
    """The producer API over the settings (imported late: ``--help`` need not load Celery), once one
    quick PING has shown that Redis answers: a person should not wait out the workers' retry policy."""
    settings = settings if settings is not None else _settings()
    with _user_errors():
        check_reachable(settings.redis.url.get_secret_value())
    from producers import Producer

    return Producer(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Exactly-once, distributed ingestion of telemetry files into InfluxDB v2.

    Settings come from the TOML file named by TSBATCH_CONFIG and from TSBATCH_... environment
    variables (nested with __, e.g. TSBATCH_ROUTES__HOT__URL). See README.md.
    """


@main.command()
@click.option(
    "--concurrency", "-c", type=click.IntRange(min=1), help="Worker processes [worker.concurrency]."
)
@click.option("--loglevel", "-l", help="[logging.level]")
@click.option("--pool", "-P", type=click.Choice(["prefork", "solo"]), default="prefork", show_default=True)
@click.option("--hostname", "-n", default=None, help="Node name, e.g. w1@%h.")
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="Replace a pool process after this many tasks (Celery's option; default: never).",
)
def worker(
    concurrency: int | None,
    loglevel: str | None,
    pool: str,
    hostname: str | None,
    max_tasks_per_child: int | None,
) -> None:
    """Start a worker that executes chunks from the queue (Ctrl-C or SIGTERM drains and stops).

    With [metrics] port set, the worker's main process serves Prometheus metrics on it."""
    settings = _settings()
    level = (loglevel or settings.logging.level).upper()
    fmt = logs.configure(settings, level=level)
    from tsbatch import metricsdir

    # Before Celery and prometheus_client are imported, and so before the pool forks (tsbatch/metricsdir.py).
    metrics_dir = metricsdir.prepare(settings.metrics)
    from workers import app

    argv = [
        # Celery prints its banner on stdout, not as records: not in a stream of JSON lines.
        *(["--quiet"] if fmt == "json" else []),
        "worker",
        "--loglevel",
        level,
        "--pool",
        pool,
        "-Q",
        settings.producer.queue,
        "--concurrency",
        str(concurrency or settings.worker.concurrency),
    ]
    if hostname:
        argv += ["--hostname", hostname]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    try:
        app.worker_main(argv)
    finally:
        metricsdir.cleanup(metrics_dir)


@main.command()
@click.option("--port", type=int, help="[flower.port]")
@click.option("--address", help="[flower.address]")
def flower(port: int | None, address: str | None) -> None:
    """Start Flower behind basic authentication ([flower] user and password).

    The password may hold any printable ASCII character, commas included; the user may not hold a
    colon (HTTP basic authentication cannot tell it from the separator)."""
    settings = _settings()
    credential = _flower_credential(settings.flower.user, settings.flower.password)
    logs.configure(settings)  # before Flower starts: tornado then adds no handler of its own
    from workers import app

    # Handed to Flower as one list item by its configuration file (tsbatch/flowerconfig.py), not through
    # FLOWER_BASIC_AUTH or --basic_auth: both are split on commas (issue #8). Never in argv (`ps`).
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    os.environ["TSBATCH_FLOWER_CREDENTIAL"] = credential
    cookie = settings.flower.cookie_secret
    os.environ["TSBATCH_FLOWER_COOKIE_SECRET"] = (
        cookie.get_secret_value() if cookie else secrets.token_hex(32)
    )
    app.start(
        [
            "flower",
            f"--conf={Path(__file__).with_name('flowerconfig.py')}",
            f"--port={port or settings.flower.port}",
            f"--address={address or settings.flower.address}",
            f"--logging={settings.logging.level.lower()}",  # tornado sets the root logger's level from it
        ]
    )


def _flower_credential(user: str, password: SecretStr | None) -> str:
    """``user:password`` for Flower, or one clear line saying why it cannot be used."""
    secret = password.get_secret_value() if password is not None else ""
    if not secret:
        raise click.ClickException(
            "configuration: flower.password: required (Flower never runs without auth)"
        )
    if ":" in user:
        raise click.ClickException("configuration: flower.user: must not contain ':' (basic auth separator)")
    # Flower compares credentials with hmac.compare_digest, which refuses non-ASCII text: every login
    # would fail with an error page.
    for name, value in (("user", user), ("password", secret)):
        if not value.isascii() or not value.isprintable():
            raise click.ClickException(f"configuration: flower.{name}: printable ASCII characters only")
    return f"{user}:{secret}"


def _field_specs(text: str | None) -> tuple[FieldSpec, ...]:
    specs = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, _, kind = item.partition(":")
        kind = kind or "float"
        if kind not in FIELD_KINDS:
            raise click.BadParameter(
                f"{item}: type must be one of {', '.join(FIELD_KINDS)}", param_hint="--field-columns"
            )
        specs.append(FieldSpec.model_validate({"name": name, "kind": kind}))
    return tuple(specs)


def _parquet_columns(opts: dict[str, Any]) -> Any:
    """``--format parquet``'s column options (None where the file's schema decides)."""
    from producers.parquet import ParquetColumns

    def names(option: str) -> tuple[str, ...] | None:
        text = opts[option]
        if text is None:
            return None
        if ":" in text:
            flag = "--" + option.replace("_", "-")
            raise click.UsageError(f"--format parquet: {flag} takes column names; the file's types are used")
        return tuple(n.strip() for n in text.split(",") if n.strip())

    return ParquetColumns(
        measurement=opts["measurement"],
        measurement_column=opts["measurement_column"] or "measurement",
        tag_columns=names("tag_columns"),
        field_columns=names("field_columns"),
        time_column=opts["time_column"],
    )


def _sources(paths: tuple[str, ...], fmt: str) -> list[str]:
    """Paths made absolute; URLs as they are (Parquet only)."""
    if fmt != "parquet" and any(is_url(p) for p in paths):
        raise click.UsageError("URLs are read with --format parquet only")
    return [p if is_url(p) else os.path.abspath(p) for p in paths]


def _mapping(fmt: str, opts: dict[str, Any]) -> Mapping | None:
    if fmt == "annotated-csv":
        given = [o for o in ("measurement", "measurement_column", "tag_columns", "field_columns") if opts[o]]
        if given:
            flags = ", ".join("--" + o.replace("_", "-") for o in given)
            raise click.UsageError(
                f"--format annotated-csv takes no {flags}: _measurement, _field, _value, _time and the "
                "tag columns say what each value is"
            )
        return None
    if fmt in ("lp", "parquet"):
        return None
    fields = _field_specs(opts["field_columns"])
    if not fields:
        raise click.UsageError(f"--format {fmt} needs --field-columns")
    if not (opts["measurement"] or opts["measurement_column"]):
        raise click.UsageError(f"--format {fmt} needs --measurement or --measurement-column")
    tags = _names(opts["tag_columns"])
    if fmt != "csv":
        given = [o for o in ("columns",) if opts[o]] + (["delimiter"] if opts["delimiter"] != "," else [])
        if given:
            raise click.UsageError(f"--{given[0]} is for --format csv")
    delimiter = "\t" if opts["delimiter"] in ("\\t", "tab") else opts["delimiter"]
    try:
        return Mapping(
            measurement=opts["measurement"],
            measurement_column=opts["measurement_column"],
            tag_columns=tags,
            field_columns=fields,
            time_column=opts["time_column"],
            time_format=opts["time_format"],
            timezone=opts["timezone"],
            ambiguous=opts["ambiguous"],
            delimiter=delimiter,
            columns=_names(opts["columns"]),
        )
    except ValidationError as e:  # one line per problem, without pydantic's decoration
        raise click.ClickException(
            "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        ) from None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--route", required=True, help="Route name from the settings ([routes.NAME]).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="lp",
    show_default=True,
    help="annotated-csv: an InfluxDB export (influx query --raw); its columns name measurement, field, "
    "value, time and tags, so it takes no mapping options. parquet: one row per point (time, measurement, "
    "tag and field columns; the file's schema maps it); PATHS may be URLs under sources.url_roots.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="ns",
    show_default=True,
    help="The unit of the file's integer timestamps (line protocol, --time-format epoch) and the "
    "precision written: RFC 3339 times are floored to it. A warning names files whose first "
    "timestamps look like another unit.",
)
@click.option("--measurement", help="CSV/JSONL/Parquet: measurement name for every record.")
@click.option(
    "--measurement-column", help="CSV/JSONL: column holding the measurement (Parquet: 'measurement')."
)
@click.option("--tag-columns", help="CSV/JSONL: a,b,c (Parquet: instead of what the file says)")
@click.option(
    "--field-columns",
    help="CSV/JSONL: x:float,n:int,u:uint,s:string,ok:bool (Parquet: names only, typed by the file)",
)
@click.option("--time-column", default="time", show_default=True)
@click.option(
    "--time-format",
    default="rfc3339",
    show_default=True,
    help="CSV/JSONL: rfc3339, epoch (integers in --precision units), or a strftime pattern such as "
    "'%Y/%m/%d %H:%M' or '%b %d %Y'.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="With a --time-format pattern without %z: the IANA zone its times are local to "
    "(America/Los_Angeles). A time the clocks skip is refused.",
)
@click.option(
    "--ambiguous",
    type=click.Choice(AMBIGUOUS),
    default="reject",
    show_default=True,
    help="A local time that occurs twice (the hour repeated when clocks go back): refuse the row, or "
    "take its earliest or latest occurrence.",
)
@click.option(
    "--delimiter",
    default=",",
    show_default=True,
    help="CSV: the one character between fields; '\\t' for a tab.",
)
@click.option("--columns", help="CSV without a header row: the column names, a,b,c (the first line is data).")
@click.option(
    "--no-preflight",
    is_flag=True,
    help="Do not map the first rows of each file before enqueueing (producer.preflight_rows), nor stop "
    "when none maps.",
)
@click.option(
    "--wait", is_flag=True, help="Show progress until the job is done; exit 1 if anything was rejected."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="With --wait: give up after this many seconds (exit 3); the job goes on.",
)
@click.option(
    "--retry-dead",
    is_flag=True,
    help="Retry chunks that an earlier run dead-lettered (after fixing the cause); without it they are "
    "listed and the command exits 1.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def produce(
    paths: tuple[str, ...],
    route: str,
    fmt: str,
    precision: str,
    wait: bool,
    timeout: float | None,
    retry_dead: bool,
    as_json: bool,
    no_preflight: bool,
    **opts: Any,
) -> None:
    """Plan PATHS into chunks and enqueue them; print the job id.

    Running the same command again is always safe: chunks already committed are skipped, chunks planned
    before but not done (an interrupted run) are enqueued again, and each chunk is written once.
    """
    settings = _settings()
    with _user_errors():
        settings.route(route)  # a wrong route name stops the command before any file is read
    mapping = _mapping(fmt, opts)
    columns = _parquet_columns(opts) if fmt == "parquet" else None
    files = _sources(paths, fmt)
    producer = _producer(settings)  # first: Redis down is reported before Celery is even imported
    from producers import new_job_id

    with producer, _user_errors():
        if not no_preflight:
            _preflight(producer, files, cast(Format, fmt), cast(Precision, precision), mapping)
        job_id = new_job_id()
        click.echo(job_id)  # first, so that a long planning run can be followed (and named) at once
        sub = producer.submit(
            files,
            route=route,
            format=cast(Format, fmt),
            mapping=mapping,
            precision=cast(Precision, precision),
            columns=columns,
            job_id=job_id,
            retry_dead=retry_dead,
        )
        for problem in sub.rejected_files:
            click.echo(f"rejected: {_printable(problem)}", err=True)
        again = f" ({sub.republished} planned by an earlier run and not done)" if sub.republished else ""
        click.echo(
            f"enqueued {sub.enqueued} chunks ({sub.lines} lines){again}, skipped {sub.skipped} already done",
            err=True,
        )
        if sub.dead:
            click.echo(
                f"{len(sub.dead)} chunk(s) were dead-lettered by an earlier run and are not retried "
                "(see `tsbatch dlq list`; fix the cause, then add --retry-dead):",
                err=True,
            )
            for where in sub.dead[:20]:
                click.echo(f"  dead: {where}", err=True)
            if len(sub.dead) > 20:
                click.echo(f"  ... and {len(sub.dead) - 20} more", err=True)
        if not wait:
            if sub.dead or sub.rejected_files:
                sys.exit(1)
            return
        status = _wait_with_bar(producer, sub.job_id, sub.enqueued, timeout)
        _print_summary(status, as_json)
        problem = producer.planning_problem(status)
        if problem:
            click.echo(problem, err=True)
        if status.failed or problem:
            sys.exit(1)


PREFLIGHT_EXIT = 2  # as a usage error: the options do not fit the files, and nothing was done


def _preflight(
    producer: Any, files: list[str], fmt: Format, precision: Precision, mapping: Mapping | None
) -> None:
    """Map the first records of every file before anything is enqueued: print the warnings; if the
    records of any file do not map, say why and what to try, and exit 2 with nothing enqueued."""
    stops = []
    for found in producer.preflight(files, format=fmt, precision=precision, mapping=mapping):
        if found.stop:
            stops.append(found.text)
        else:
            click.echo(f"warning: {_printable(found.text)}", err=True)
    if stops:
        for text in stops:
            click.echo(f"error: {_printable(text)}", err=True)
        click.echo(
            "nothing was enqueued: fix the options (or the files), or add --no-preflight to produce them "
            "as they are",
            err=True,
        )
        sys.exit(PREFLIGHT_EXIT)


def _wait_with_bar(producer: Any, job_id: str, total: int, timeout: float | None = None) -> JobStatus:
    with click.progressbar(length=max(total, 1), label="chunks", file=sys.stderr) as bar:
        seen = 0

        def update(status: JobStatus) -> None:
            nonlocal seen
            done = status.committed + status.dead
            bar.update(done - seen)
            seen = done

        try:
            status: JobStatus = producer.wait(job_id, timeout_s=timeout, on_update=update)
        except TimeoutError as e:
            click.echo(f"\ntimed out: {e}; `tsbatch status {job_id}` follows it", err=True)
            sys.exit(3)
        return status


def _summary(status: JobStatus) -> dict[str, Any]:
    secs = status.seconds
    return {
        "job": status.job_id,
        "chunks": status.units,
        "committed": status.committed,
        "dead": status.dead,
        "dead_before": status.dead_before,
        "skipped": status.skipped,
        "pending": status.pending,
        "planned": status.planned,
        "points": status.points,
        "bytes": status.bytes,
        "seconds": round(secs, 3),
        "points_per_s": round(status.points / secs) if secs else 0,
        "rejected_lines": status.rejected,
        "rejected_files": status.rejected_files,
    }


def _print_summary(status: JobStatus, as_json: bool) -> None:
    s = _summary(status)
    if as_json:
        click.echo(json.dumps(s))
        return
    before = f", {s['dead_before']} dead-lettered before" if s["dead_before"] else ""
    files = f"; {s['rejected_files']} rejected files" if s["rejected_files"] else ""
    click.echo(
        f"job {s['job']}: {s['committed']}/{s['chunks']} chunks committed, {s['dead']} dead-lettered"
        f"{before}, {s['skipped']} skipped; {s['points']} points, {s['bytes']} bytes in {s['seconds']} s "
        f"({s['points_per_s']} points/s); {s['rejected_lines']} rejected lines{files}"
    )


@main.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="With JOB: follow it until it is done.")
@click.option("--once", is_flag=True, help="Without JOB: one snapshot, even on a terminal.")
def status(job: str | None, as_json: bool, watch: bool, once: bool) -> None:
    """Without JOB: every running job, route, worker node and scheduled job, live on a terminal
    (refreshed every second; plain text otherwise, --json for scripts). With JOB: that job's chunks
    pending / committed / dead-lettered and points written (--watch follows it)."""
    if job is None:
        _system_status(as_json, once)
        return
    with _producer() as producer:
        st = producer.status(job)
        problem = producer.planning_problem(st)
        if st.exists and watch and not st.done:
            st = _wait_with_bar(producer, job, st.units)
            problem = producer.planning_problem(st)
    if not st.exists:
        raise click.ClickException(f"no job {job}")
    if as_json:
        click.echo(json.dumps({**_summary(st), "planning_problem": problem}))
        return
    _print_summary(st, as_json)
    if problem:
        click.echo(problem, err=True)


def _system_status(as_json: bool, once: bool) -> None:
    import time

    from tsbatch.statusview import plain, rich_view, snapshot

    with _route_guard() as (settings, guard), _producer(settings) as producer:
        snap = snapshot(settings, producer.ledger, guard)
        if as_json or once or not sys.stdout.isatty():
            time.sleep(1)  # a second snapshot gives the rates
            snap = snapshot(settings, producer.ledger, guard, snap)
            click.echo(json.dumps(snap.as_json()) if as_json else plain(snap))
            return
        from rich.live import Live

        with Live(rich_view(snap), refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    time.sleep(1)
                    snap = snapshot(settings, producer.ledger, guard, snap)
                    live.update(rich_view(snap))
            except KeyboardInterrupt:
                return


@main.group()
def dlq() -> None:
    """The dead-letter queue: what was rejected, where, and why."""


@dlq.command("list")
@click.option("--job", help="Only entries of this job.")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(job: str | None, limit: int, as_json: bool) -> None:
    """List dead-lettered lines, chunks and messages (file, line number, reason).

    Control characters from the files (such as ESC) are printed as \\xNN escapes; --json escapes
    them as JSON does."""
    with _producer() as producer:
        trimmed = producer.ledger.stats().get("dlq_trimmed", 0)
        if trimmed:
            click.echo(
                f"warning: {trimmed} older entries were trimmed from the dead-letter queue "
                "(ledger.dlq_maxlen)",
                err=True,
            )
        for n, entry in enumerate(producer.dead_letters(job)):
            if n >= limit:
                click.echo("... more entries; raise --limit", err=True)
                break
            if as_json:
                click.echo(json.dumps({"id": entry.id, **entry.fields}))
                continue
            where = f"{entry.get('path')}:{entry.get('line')}" if entry.get("line") else entry.get("path")
            text = (
                f"{entry.id}  {entry.get('kind'):7} {entry.get('reason'):16} {where}: {entry.get('message')}"
            )
            click.echo(_printable(text))


def _select(producer: Any, ids: tuple[str, ...], job: str | None) -> list[Any]:
    if not ids and not job:
        raise click.UsageError("name entry IDs or --job")
    if ids:
        found = [producer.ledger.dead_letter_entry(i) for i in ids]
        missing = [i for i, e in zip(ids, found, strict=True) if e is None]
        if missing:
            raise click.ClickException(f"no dead-letter entry {', '.join(missing)}")
        return found
    return list(producer.dead_letters(job))


@dlq.command("show")
@click.argument("entry_id")
def dlq_show(entry_id: str) -> None:
    """Everything recorded about one entry (the descriptor, the rejected line, the history)."""
    with _producer() as producer:
        entry = producer.ledger.dead_letter_entry(entry_id)
    if entry is None:
        raise click.ClickException(f"no dead-letter entry {entry_id}")
    click.echo(json.dumps({"id": entry.id, **entry.fields}, indent=2))


@dlq.command("replay")
@click.argument("entry_ids", nargs=-1)
@click.option("--job", help="Replay every dead-lettered chunk of this job.")
@click.option("--wait", is_flag=True, help="Wait for the replayed chunks.")
def dlq_replay(entry_ids: tuple[str, ...], job: str | None, wait: bool) -> None:
    """Enqueue dead-lettered chunks again (exactly-once still holds); prints the new job id."""
    with _producer() as producer:
        sub = producer.replay(_select(producer, entry_ids, job))
        click.echo(sub.job_id)
        click.echo(f"replayed {sub.enqueued} chunks, {sub.skipped} already done", err=True)
        if wait and sub.enqueued:
            status = _wait_with_bar(producer, sub.job_id, sub.enqueued)
            _print_summary(status, as_json=False)
            if status.dead or status.rejected:
                sys.exit(1)


@dlq.command("export")
@click.option("--job", required=True)
def dlq_export(job: str) -> None:
    """Print the job's rejected lines, as they were in the file, to fix and produce again.

    A control character in a line (C0 but tab, DEL, C1: ESC among them) is printed as a \\xNN
    escape, four characters, so that a line cannot drive the terminal; printable text, tabs and
    backslashes are printed as they are."""
    with _producer() as producer:
        for entry in producer.dead_letters(job):
            if entry.get("kind") == "line":
                click.echo(_printable(entry.get("raw")))


@dlq.command("purge")
@click.argument("entry_ids", nargs=-1)
@click.option("--job", help="Every entry of this job.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(entry_ids: tuple[str, ...], job: str | None, yes: bool) -> None:
    """Delete dead-letter entries for good."""
    with _producer() as producer:
        entries = _select(producer, entry_ids, job)
        if not yes:
            click.confirm(f"delete {len(entries)} entries?", abort=True)
        removed = producer.ledger.remove_dead_letters([e.id for e in entries])
    click.echo(f"purged {removed} entries")


@contextmanager
def _route_guard() -> Iterator[tuple[Settings, RouteGuard]]:
    """The routes' breakers and pauses in Redis; needs neither the worker nor influxdb-client."""
    from tsbatch.breaker import RouteGuard
    from tsbatch.ledger import connect

    settings = _settings()
    w = settings.worker
    client = connect(settings.redis.url.get_secret_value())
    try:
        yield (
            settings,
            RouteGuard(
                client,
                prefix=settings.redis.key_prefix,
                threshold=w.breaker_threshold,
                cooldown_s=w.breaker_cooldown_s,
                max_pause_s=w.retry_after_max_s,
            ),
        )
    finally:
        client.close()


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per route.")
@click.pass_context
def routes(ctx: click.Context, as_json: bool) -> None:
    """Each route's circuit breaker and Retry-After pause (the same as `routes list`).

    Both hold a route's writes back on every worker. `tsbatch routes clear NAME` closes the breaker
    and lifts the pause, e.g. once a refused token has been replaced.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(routes_list, as_json=as_json)


def _describe_route(st: RouteState, max_pause_s: float) -> str:
    breaker = f"breaker {st.breaker}"
    if st.breaker != "closed" or st.failures:
        left = f", {st.open_for_s:.1f}s left" if st.open_for_s else ""
        kind = f"{st.kind}, " if st.kind else ""
        breaker += f" ({kind}{st.failures} failures{left}): {st.reason}"
    pause = "not paused"
    if st.paused_for_s:
        pause = f"paused {st.paused_for_s:.1f}s by Retry-After"
        if st.paused_for_s > max_pause_s:
            pause += f" (workers wait at most {max_pause_s:g}s)"
    return f"{st.route}: {breaker}; {pause}"


@routes.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per route.")
def routes_list(as_json: bool) -> None:
    """Show each route's breaker (closed/open, failures, why, time left) and Retry-After pause."""
    with _route_guard() as (settings, guard):
        # Routes no longer configured still show while Redis holds a breaker or a pause for them.
        names = sorted(set(settings.routes) | set(guard.known_routes()))
        states = guard.states(names)
    for st in states:
        if as_json:
            click.echo(json.dumps({**st.to_json(), "configured": st.route in settings.routes}))
            continue
        click.echo(_describe_route(st, settings.worker.retry_after_max_s))
        if st.held:
            click.echo(f"  to clear: tsbatch routes clear {shlex.quote(st.route)}")


@routes.command("clear")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def routes_clear(name: str, as_json: bool) -> None:
    """Close route NAME's breaker and lift its Retry-After pause, on every worker at once."""
    with _route_guard() as (settings, guard):
        if name not in settings.routes and name not in guard.known_routes():
            known = ", ".join(sorted(settings.routes)) or "none configured"
            raise click.ClickException(f"no route {name} (known: {known})")
        deleted = guard.clear(name)
    if as_json:
        click.echo(json.dumps({"route": name, "deleted_keys": deleted}))
    else:
        click.echo(f"route {name}: breaker closed, pause lifted ({deleted} keys deleted)")


# The window, lifecycle and bucket commands register themselves on ``main`` (modules of their own:
# cli.py stays one idea).
from tsbatch import cli_audit, cli_buckets, cli_lifecycle, cli_windows  # noqa: E402, F401

if __name__ == "__main__":
    # Run as ``python -m tsbatch.cli``, this file is ``__main__``: the window commands registered on the
    # ``main`` of the module ``tsbatch.cli``, so that is the one to run.
    from tsbatch.cli import main as _main

    _main()
