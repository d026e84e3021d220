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


def test_millisecond_timestamps_produced_as_nanoseconds_warn_naming_the_file_and_ms(
    tmp_path: Path, root: Path, redis_server: str
) -> None:
    src = root / "ms.lp"
    src.write_text("".join(f"cpu,host=a v={i} {NS_2024 // 10**6 + i}\n" for i in range(10)))
    ok = root / "ns.lp"
    ok.write_text(f"cpu,host=a v=1 {NS_2024}\n")

    done = tsbatch(tmp_path, settings(root, redis_server), "produce", str(root), "--route", "hot")

    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {src}: timestamps such as {NS_2024 // 10**6} read as 1970-01-01 (before 1971) under "
        "--precision ns; they look like --precision ms"
    ]
    assert "enqueued 2 chunks (11 lines)" in done.stderr  # a warning does not stop the job


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
