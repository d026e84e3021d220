"""Logs: JSON or text lines through one formatter, the unit each line is about, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from tests.conftest import cli
from tsbatch import datagen, logs
from tsbatch.envelope import describe_unit, unit_reprs
from tsbatch.redaction import Redactor

TOKEN = "route-token-7Qx9"
REDIS_PASSWORD = "redis-pass-3Kv2"
FLOWER_PASSWORD = "flower,pass:8Zt"


@pytest.fixture
def root_logger() -> Iterator[None]:
    """Leave the test process's logging as it was (pytest's own handlers stay)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _settings(fmt: str, token_file: Path | None = None) -> Settings:
    route = {"url": "http://127.0.0.1:1", "org": "o", "bucket": "b"}
    return Settings(
        routes={
            "hot": {**route, "token": TOKEN},
            **({"warm": {**route, "token_file": str(token_file)}} if token_file else {}),
        },
        redis={"url": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"},
        flower={"password": FLOWER_PASSWORD},
        logging={"format": fmt},
    )


def _emit(settings: Settings) -> str:
    out = io.StringIO()
    logs.configure(settings, stream=out)
    log = logging.getLogger("tsbatch.worker")
    with logs.bound(job="J1", unit="k" * 64, route="hot", window=None, attempt=None):
        logs.bind(attempt=3)
        log.info("committed job=J1 points=5")
        try:
            token = TOKEN  # a local variable holding a secret: never printed (no show_locals)
            raise RuntimeError(f"server said: Authorization: Token {token} (redis {REDIS_PASSWORD})")
        except RuntimeError:
            log.exception("write failed")
    logging.getLogger("kombu.connection").warning("cannot connect to redis://:%s@127.0.0.1:6379/0", "pw")
    return out.getvalue()


def test_json_lines_carry_time_level_logger_message_and_the_bound_fields(root_logger) -> None:
    lines = [json.loads(line) for line in _emit(_settings("json")).splitlines()]

    committed, failed, kombu = lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", committed["timestamp"])  # RFC 3339, UTC
    assert committed["level"] == "info" and committed["logger"] == "tsbatch.worker"
    assert committed["message"] == "committed job=J1 points=5"
    assert logs_fields(committed) == {"job": "J1", "unit": "k" * 64, "route": "hot", "attempt": 3}
    assert "window" not in committed  # unknown fields are left out
    assert failed["exception"].startswith("Traceback") and "RuntimeError" in failed["exception"]
    assert kombu["logger"] == "kombu.connection" and "job" not in kombu  # outside the block: unbound


def logs_fields(line: dict[str, object]) -> dict[str, object]:
    return {k: line[k] for k in logs.CONTEXT_KEYS if k in line}


def test_no_secret_survives_a_log_line_or_its_traceback(root_logger, tmp_path: Path) -> None:
    token_file = tmp_path / "warm.token"
    token_file.write_text("file-token-5Mw1\n")
    for fmt in ("json", "text"):
        text = _emit(_settings(fmt, token_file))
        for secret in (TOKEN, REDIS_PASSWORD, FLOWER_PASSWORD, "file-token-5Mw1", ":pw@"):
            assert secret not in text, (fmt, secret, text)
        assert "***" in text
        assert "token = " not in text  # the local variable: tracebacks carry no locals


def test_text_lines_keep_celerys_layout_with_the_fields_after_the_message(root_logger) -> None:
    first = _emit(_settings("text")).splitlines()[0]

    # scripts/chaos.py and people read worker logs in Celery's "[time: LEVEL/process] message" layout.
    assert re.match(r"^\[[^\]]*: (INFO)/MainProcess\] committed job=J1 points=5  job=J1 unit=k+ ", first)
    assert first.endswith("route=hot attempt=3")


def test_the_format_follows_the_terminal_unless_set() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format(None, Tty()) == "text"
    assert logs.resolve_format(None, io.StringIO()) == "json"
    assert logs.resolve_format("json", Tty()) == "json"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Authorization: Token abc123def then more", "Authorization: *** then more"),
        ("{'Authorization': 'Basic YWRtaW46cHc='}", "{'Authorization': '***'}"),
        ('{"authorization": "Bearer x.y.z"}', '{"authorization": "***"}'),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("GET http://user:pa55@influx:8086/api", "GET http://***@influx:8086/api"),
        ("?org=o&token=abc123&bucket=b", "?org=o&token=***&bucket=b"),
        ('{"password": "hunter22"}', '{"password": "***"}'),
        ("{'cookie_secret': 'QOzwAgQh7S',\n 'debug': False}", "{'cookie_secret': '***',\n 'debug': False}"),
        ("X-Influx-Token: abc", "X-Influx-Token: ***"),
        ("route hot: token_file /run/secrets/t: empty", "route hot: token_file /run/secrets/t: empty"),
        ("token_file /run/hot.token: No such file", "token_file /run/hot.token: No such file"),
        ("/run/secrets/token: No such file", "/run/secrets/token: No such file"),
        ("/tmp/influx-token: No such file", "/tmp/influx-token: No such file"),
        ("w1@host ready.", "w1@host ready."),
    ],
)
def test_credential_shaped_text_is_masked_and_ordinary_text_is_not(text: str, masked: str) -> None:
    assert Redactor()(text) == masked


def test_known_secrets_are_masked_wherever_they_appear_but_not_trivially_short_ones() -> None:
    redact = Redactor(["longer-secret", "secret", "ab"])
    assert redact("x longer-secret y secret z ab") == "x *** y *** z ab"


CHUNK = {
    "schema_version": 1,
    "job_id": "20260101T000000Z-abc123",
    "path": "/srv/telemetry/a.lp",
    "start": 0,
    "end": 4096,
    "first_line": 1,
    "route": "hot",
    "key": "f" * 64,
    "chunk_sha256": "0" * 64,
    "mapping": {"measurement": "cpu", "tag_columns": ["host"]},
}


def test_flower_shows_a_unit_by_a_short_summary_not_its_descriptor() -> None:
    reprs = unit_reprs(CHUNK, {"ledger_errors": 2})

    assert "/srv/telemetry/a.lp bytes 0-4096" in reprs["argsrepr"]
    assert "job=20260101T000000Z-abc123 route=hot key=ffffffffffff" in reprs["argsrepr"]
    assert "chunk_sha256" not in reprs["argsrepr"] and "mapping" not in reprs["argsrepr"]
    assert reprs["kwargsrepr"] == "{'ledger_errors': 2}"
    window = {"unit": "window", "job": "cpu_5m", "job_id": "j", "start": 0, "end": 300, "key": "e" * 64}
    window["definition"] = {"source": "hot", "target": "warm"}
    assert describe_unit(window) == (
        "window cpu_5m [1970-01-01T00:00:00Z, 1970-01-01T00:05:00Z) job=j route=warm key=eeeeeeeeeeee"
    )
    assert describe_unit(["not", "a", "descriptor"]) == "a list, not a descriptor"


def test_worker_json_lines_parse_one_by_one_and_name_the_committed_chunk(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 500, "taper": False}, logging={"format": "json"})
    worker = stack.start_worker(concurrency=2)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=10, points_per_series=100)  # 1,000 lines: 2 chunks

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout.splitlines()[-1])["job"]
    lines = [json.loads(line) for line in worker.log.read_text().splitlines()]  # every line is JSON
    committed = [r for r in lines if r["message"].startswith("committed job=")]
    assert len(committed) == 2
    for r in committed:
        assert r["job"] == job and r["route"] == "default" and r["attempt"] == 1
        assert len(r["unit"]) == 64 and f"key={r['unit'][:12]}" in r["message"]
        assert re.fullmatch(r".+:\d+", r["worker"]) and r["task_id"]
        assert r["process"].startswith("ForkPoolWorker-")  # written in a pool child: inherited handler
    # Celery's own lines go through the same formatter, with the task's id where they are about one.
    loggers = {r["logger"] for r in lines}
    assert {"celery.worker.strategy", "celery.app.trace", "celery.apps.worker"} <= loggers
    succeeded = [r for r in lines if r["logger"] == "celery.app.trace" and "succeeded" in r["message"]]
    assert {r["task_id"] for r in succeeded} >= {r["task_id"] for r in committed}
