"""Errors a user meets (issue #8): each one is a line naming the setting or the cause, never a traceback,
and a wrong timestamp unit is a warning naming the file."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tsbatch.localstack import free_port, to_toml

NS_2024 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z


def settings(root: Path, redis_url: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A complete, valid settings file (a route nobody listens on: nothing here writes), then changes."""
    base: dict[str, Any] = {
        "redis": {"url": redis_url, "key_prefix": f"t{secrets.token_hex(4)}"},
        "sources": {"roots": [str(root)]},
        "routes": {"hot": {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b", "token": "t"}},
        "producer": {"queue": f"q{secrets.token_hex(4)}"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def tsbatch(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tsbatch.toml"
    path.write_text(to_toml(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSBATCH_")}
    env["TSBATCH_CONFIG"] = str(path)
    return subprocess.run(
        [sys.executable, "-m", "tsbatch.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


DOWN = "redis://127.0.0.1:1/0"  # never reached: each bad setting stops the command before Redis


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"routes": {"hot": {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b"}}},
            'configuration: routes.hot: give token or token_file (token = "" for a server without '
            "authentication)",
        ),
        ({"sources": {"roots": ["data"]}}, "configuration: sources.roots: data: must be an absolute path"),
        (
            {"sources": {"roots": ["/nonexistent/telemetry"]}},
            "configuration: sources.roots: /nonexistent/telemetry: no such directory",
        ),
        (
            {"worker": {"visibility_timeout_s": 600, "retry_max_s": 900.0}},
            "configuration: worker.retry_max_s: 900 s is above worker.visibility_timeout_s (600 s)",
        ),
    ],
    ids=["route-without-token", "relative-root", "missing-root", "retry-above-visibility"],
)
def test_each_bad_setting_stops_the_cli_with_one_line_naming_it(
    tmp_path: Path, root: Path, change: dict[str, Any], message: str
) -> None:
    config = settings(root, DOWN)
    config.update(change)

    done = tsbatch(tmp_path, config, "status", "JOB")

    assert one_line(done) == f"Error: {message}"


def test_a_source_root_that_is_a_file_is_refused(tmp_path: Path, root: Path) -> None:
    (root / "a.lp").write_text("")

    done = tsbatch(tmp_path, settings(root, DOWN, sources={"roots": [str(root / "a.lp")]}), "status", "J")

    assert one_line(done) == f"Error: configuration: sources.roots: {root / 'a.lp'}: not a directory"


def test_an_explicit_empty_token_is_a_route_without_authentication(
    tmp_path: Path, root: Path, redis_server: str
) -> None:
    route = {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b", "token": ""}
    done = tsbatch(tmp_path, settings(root, redis_server, routes={"hot": route}), "status", "JOB")

    assert one_line(done) == "Error: no job JOB"  # the settings passed; Redis answered


@pytest.mark.parametrize(
    "args",
    [("produce", "FILE", "--route", "hot"), ("status", "JOB"), ("dlq", "list"), ("dlq", "show", "1-0")],
)
def test_redis_down_is_one_line_within_seconds_without_the_password(
    tmp_path: Path, root: Path, args: tuple[str, ...]
) -> None:
    (root / "a.lp").write_text(f"cpu v=1 {NS_2024}\n")
    port = free_port()  # nothing listens there
    config = settings(root, f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    args = tuple(str(root / "a.lp") if a == "FILE" else a for a in args)

    started = time.monotonic()
    done = tsbatch(tmp_path, config, *args)
    elapsed = time.monotonic() - started

    assert one_line(done) == (
        f"Error: redis: cannot connect to 127.0.0.1:{port} (Connection refused): is redis-server running? "
        "[redis.url]"
    )
    assert "hunter2" not in done.stdout + done.stderr
    assert elapsed < 5


def nothing_recorded(redis_url: str, config: dict[str, Any]) -> bool:
    """No key of the run's ledger in Redis and nothing in its queue: no job, no unit, no message."""
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = config["redis"]["key_prefix"]
        return not list(client.scan_iter(f"{prefix}*")) and client.llen(config["producer"]["queue"]) == 0
    finally:
        client.close()


def test_millisecond_timestamps_produced_as_nanoseconds_stop_the_job_naming_the_file_and_ms(
    tmp_path: Path, root: Path, redis_server: str
) -> None:
    src = root / "ms.lp"
    src.write_text("".join(f"cpu,host=a v={i} {NS_2024 // 10**6 + i}\n" for i in range(10)))
    ok = root / "ns.lp"
    ok.write_text(f"cpu,host=a v=1 {NS_2024}\n")
    config = settings(root, redis_server)

    done = tsbatch(tmp_path, config, "produce", str(root), "--route", "hot")

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # no job id: no job
    assert done.stderr.splitlines() == [
        f"error: {src}: timestamps such as {NS_2024 // 10**6} read as 1970-01-01 (before 1971) under "
        "--precision ns; they look like --precision ms",
        "nothing was enqueued: fix the options (or the files), or add --no-preflight to produce them as "
        "they are",
    ]
    assert nothing_recorded(redis_server, config)

    anyway = tsbatch(tmp_path, config, "produce", str(root), "--route", "hot", "--no-preflight")

    assert anyway.returncode == 0, anyway.stderr
    assert "enqueued 2 chunks (11 lines)" in anyway.stderr


def test_a_csv_whose_times_are_not_rfc3339_stops_with_the_pattern_that_reads_them(
    tmp_path: Path, root: Path, redis_server: str
) -> None:
    src = root / "noaa.csv"
    src.write_text("STATION,DATE,TMAX\n" + "".join(f"USW1,2012/01/{d:02d},{d}\n" for d in range(1, 32)))
    config = settings(root, redis_server)
    mapping = ("--format", "csv", "--measurement", "w", "--tag-columns", "STATION", "--field-columns", "TMAX")

    done = tsbatch(tmp_path, config, "produce", str(src), "--route", "hot", "--time-column", "DATE", *mapping)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == (
        f"error: {src}: the first 31 records do not map; line 2: time '2012/01/01' is not RFC 3339 (e.g. "
        "2024-01-02T03:04:05.123Z); try --time-format '%Y/%m/%d' (these times have no offset: add "
        "--timezone NAME unless they are UTC)"
    )
    assert nothing_recorded(redis_server, config)

    fixed = tsbatch(
        tmp_path,
        config,
        "produce",
        str(src),
        "--route",
        "hot",
        "--time-column",
        "DATE",
        *mapping,
        "--time-format",
        "%Y/%m/%d",
    )

    assert fixed.returncode == 0, fixed.stderr
    assert "enqueued 1 chunks (31 lines)" in fixed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--time-format", "%Y/%q"), "time format '%Y/%q': %q cannot be read"),
        (("--time-format", "%Y", "--timezone", "Mars/Olympus"), "time zone 'Mars/Olympus' is not an IANA"),
        (("--timezone", "Europe/Berlin"), "--timezone and --ambiguous apply to times without an offset"),
        (("--delimiter", ";;"), "delimiter ';;': one character"),
    ],
)
def test_time_and_delimiter_options_that_cannot_be_read_stop_the_cli_with_one_line(
    tmp_path: Path, root: Path, redis_server: str, args: tuple[str, ...], message: str
) -> None:
    (root / "a.csv").write_text("time,v\n")
    done = tsbatch(
        tmp_path,
        settings(root, redis_server),
        "produce",
        str(root / "a.csv"),
        "--route",
        "hot",
        "--format",
        "csv",
        "--measurement",
        "m",
        "--field-columns",
        "v",
        *args,
    )
    assert done.returncode == 1, done.stderr
    assert message in one_line(done)


def test_rfc3339_milliseconds_produced_with_precision_s_warn_that_they_would_be_floored(
    tmp_path: Path, root: Path, redis_server: str
) -> None:
    src = root / "cpu.csv"
    src.write_text("time,host,v\n2024-01-01T00:00:00.250Z,a,1\n2024-01-01T00:00:00.750Z,a,2\n")
    mapping = ("--format", "csv", "--measurement", "cpu", "--tag-columns", "host", "--field-columns", "v")

    done = tsbatch(
        tmp_path,
        settings(root, redis_server),
        "produce",
        str(src),
        "--route",
        "hot",
        "--precision",
        "s",
        *mapping,
    )

    assert done.returncode == 0, done.stderr
    warning = done.stderr.splitlines()[0]
    assert warning.startswith(f"warning: {src}: RFC 3339 times such as 2024-01-01T00:00:00.250Z")
    assert "would be floored" in warning and warning.endswith("use --precision ms")
