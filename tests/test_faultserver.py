"""The fault-injection server (tests/faultserver.py) in front of a real VictoriaMetrics.

VictoriaMetrics facts these tests rely on (1.79, Debian's): ``/api/v2/write`` takes line protocol,
gzip included; a series is named ``<measurement>_<field>``; timestamps are stored in milliseconds
(finer ones are truncated); bucket and org are ignored; and a write shows in ``/api/v1/export`` only
after ``/internal/force_flush`` (or a few seconds).
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faultserver import FaultServer
from tsbatch.localstack import start_victoria

VM_BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
TS0 = 1_700_000_000_000
"""A millisecond timestamp (2023-11-14) well inside the 100 y retention."""

pytestmark = [
    pytest.mark.skipif(not Path(VM_BINARY).exists(), reason="victoria-metrics is not installed"),
    pytest.mark.timeout(120),
]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------------
# VictoriaMetrics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VictoriaMetrics:
    url: str

    def get(self, path: str) -> bytes:
        with _NO_PROXY.open(self.url + path, timeout=10) as response:
            body: bytes = response.read()
            return body

    def points(self, measurement: str) -> dict[str, list[tuple[int, float]]]:
        """``{series name: [(ms timestamp, value), ...]}`` for the measurement, after a flush."""
        self.get("/internal/force_flush")
        match = urllib.parse.quote(f'{{__name__=~"{measurement}_.*"}}')
        series: dict[str, list[tuple[int, float]]] = {}
        for line in self.get(f"/api/v1/export?match[]={match}").decode().splitlines():
            item = json.loads(line)
            samples = series.setdefault(item["metric"]["__name__"], [])
            samples.extend(zip(item["timestamps"], item["values"], strict=True))
        return {name: sorted(samples) for name, samples in series.items()}


@pytest.fixture(scope="module")
def _victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    vm = start_victoria(tmp_path_factory.mktemp("vm"))
    try:
        yield VictoriaMetrics(vm.url)
    finally:
        vm.stop()


def _assert_clean_exit(server: FaultServer) -> None:
    assert server.stop() == 0
    assert server.stderr == "", server.stderr


@pytest.fixture
def fault_server(_victoria_metrics: VictoriaMetrics) -> Iterator[FaultServer]:
    server = FaultServer.start(_victoria_metrics.url, seed=1)
    try:
        yield server
    finally:
        _assert_clean_exit(server)


# --------------------------------------------------------------------------------------------------
# A plain HTTP client
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def write(
    url: str,
    body: str | bytes,
    *,
    precision: str | None = "ms",
    bucket: str | None = "bucket",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """POST to ``/api/v2/write`` with http.client: no retries, no proxies, errors as they come."""
    params = {"org": "org", "bucket": bucket, "precision": precision}
    query = urllib.parse.urlencode({key: value for key, value in params.items() if value is not None})
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        data = body.encode() if isinstance(body, str) else body
        connection.request("POST", f"/api/v2/write?{query}", body=data, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def get(url: str) -> Reply:
    try:
        with _NO_PROXY.open(url, timeout=10) as response:
            return Reply(response.status, dict(response.getheaders()), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, dict(exc.headers), exc.read())


def measurement() -> str:
    """A measurement name no other test uses (the VictoriaMetrics instance is shared)."""
    return f"m{uuid.uuid4().hex[:12]}"


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# Writes that land
# --------------------------------------------------------------------------------------------------


def test_plain_write_lands_in_victoria_metrics(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    reply = write(fault_server.url, f"{m},host=a f=1.5 {TS0}\n{m},host=a f=2.5,i=7i {TS0 + 1}\n")

    assert reply.status == 204
    assert reply.body == b""
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0, 1.5), (TS0 + 1, 2.5)], f"{m}_i": [(TS0 + 1, 7)]}
    [record] = fault_server.requests(lines=True)
    assert record["status"] == 204
    assert record["outcome"] == "forwarded"
    assert record["upstream_status"] == 204
    assert record["line_count"] == record["forwarded_lines"] == 2
    assert record["lines"] == [f"{m},host=a f=1.5 {TS0}", f"{m},host=a f=2.5,i=7i {TS0 + 1}"]


def test_gzip_write_with_default_precision_lands_in_victoria_metrics(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    # No precision: InfluxDB assumes ns, and so does the fault server when it forwards.
    body = "".join(f"{m} f={i} {(TS0 + i) * 1_000_000}\n" for i in range(100)).encode()
    compressed = gzip.compress(body)
    reply = write(fault_server.url, compressed, precision=None, headers={"Content-Encoding": "gzip"})

    assert reply.status == 204
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + i, float(i)) for i in range(100)]}
    [record] = fault_server.requests()
    assert record["body_size"] == len(compressed)
    assert record["line_count"] == 100
    assert record["headers"]["Content-Encoding"] == "gzip"
    assert record["query"] == {"org": "org", "bucket": "bucket", "precision": None}
    assert "lines" not in record


def test_ping_and_health(fault_server: FaultServer) -> None:
    ping = get(fault_server.url + "/ping")
    assert ping.status == 204
    assert ping.headers["X-Influxdb-Build"] == "OSS"
    health = get(fault_server.url + "/health")
    assert health.status == 200
    assert health.json()["status"] == "pass"
    assert fault_server.requests() == []


def test_invalid_requests_get_influxdb_errors(fault_server: FaultServer) -> None:
    m = measurement()
    cases = [
        (write(fault_server.url, f"{m} f=1", precision="xx"), 400, "invalid precision"),
        (write(fault_server.url, f"{m} f=1", bucket=None), 404, "bucket not found"),
        (write(fault_server.url, b"not gzip", headers={"Content-Encoding": "gzip"}), 400, "unable to read"),
        (write(fault_server.url, b""), 400, "writing requires points"),
    ]
    for reply, status, message in cases:
        assert reply.status == status
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        assert reply.json()["code"] == ("invalid" if status == 400 else "not found")
        assert message in reply.json()["message"]
    assert fault_server.stats()["by_outcome"] == {"invalid": 4}


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_429_with_retry_after_for_exactly_count_writes(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    fault_server.set_faults([{"status": 429, "retry_after": "2", "count": 2}])

    replies = [write(fault_server.url, f"{m} f={i} {TS0 + i}") for i in range(3)]

    assert [reply.status for reply in replies] == [429, 429, 204]
    for reply in replies[:2]:
        assert reply.headers["Retry-After"] == "2"
        assert reply.json()["code"] == "too many requests"
        assert reply.headers["X-Platform-Error-Code"] == "too many requests"
    assert "Retry-After" not in replies[2].headers
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + 2, 2.0)]}
    [rule] = fault_server.faults()
    assert (rule["count"], rule["fired"]) == (0, 2)
    stats = fault_server.stats()
    assert stats["by_status"] == {"429": 2, "204": 1}
    assert stats["by_rule"] == {"0": 2}
    assert (stats["lines_received"], stats["lines_forwarded"]) == (3, 1)


def test_rule_without_count_stays_until_cleared(fault_server: FaultServer) -> None:
    m = measurement()
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    fault_server.set_faults([{"status": 503, "retry_after": date}])

    for _ in range(2):
        reply = write(fault_server.url, f"{m} f=1 {TS0}")
        assert reply.status == 503
        assert reply.headers["Retry-After"] == date
        assert reply.json()["code"] == "unavailable"
    fault_server.clear_faults()
    assert write(fault_server.url, f"{m} f=1 {TS0}").status == 204


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "internal error"), (413, "request too large"), (401, "unauthorized"), (400, "invalid")],
)
def test_respond_rules_give_influxdb_error_bodies(fault_server: FaultServer, status: int, code: str) -> None:
    fault_server.set_faults([{"status": status, "count": 1}])
    reply = write(fault_server.url, f"{measurement()} f=1 {TS0}")
    assert reply.status == status
    assert reply.json()["code"] == code
    assert reply.json()["message"]


def test_custom_body(fault_server: FaultServer) -> None:
    fault_server.set_faults([{"status": 503, "body": "upstream connect error", "count": 1}])
    reply = write(fault_server.url, f"{measurement()} f=1 {TS0}")
    assert (reply.status, reply.body) == (503, b"upstream connect error")
    assert reply.headers["Content-Type"].startswith("text/plain")


def test_reset_closes_the_connection_without_an_answer(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    fault_server.set_faults([{"mode": "reset", "count": 1}])

    with pytest.raises(ConnectionError):
        write(fault_server.url, f"{m} f=1 {TS0}")
    assert write(fault_server.url, f"{m} f=2 {TS0 + 1}").status == 204

    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + 1, 2.0)]}
    first, second = fault_server.requests()
    assert (first["outcome"], first["status"], first["mode"]) == ("reset", None, "reset")
    assert second["outcome"] == "forwarded"


def test_reset_after_forwarding_leaves_the_write_done(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    """The ambiguous failure: the data is written but the client only sees a broken connection."""
    m = measurement()
    fault_server.set_faults([{"mode": "reset", "forward": True, "count": 1}])

    with pytest.raises(ConnectionError):
        write(fault_server.url, f"{m} f=1 {TS0}")

    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0, 1.0)]}
    [record] = fault_server.requests()
    assert (record["outcome"], record["forwarded_lines"], record["upstream_status"]) == ("reset", 1, 204)


def test_hang_never_answers_within_the_client_timeout(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    fault_server.set_faults([{"mode": "hang", "count": 1}])

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        write(fault_server.url, f"{m} f=1 {TS0}", timeout=1.0)
    assert time.monotonic() - started >= 1.0

    # The server notices when the client gives up and closes the connection.
    wait_for(lambda: fault_server.requests()[0]["client_gave_up"])
    [record] = fault_server.requests(lines=True)
    assert (record["outcome"], record["status"], record["line_count"]) == ("hang", None, 1)
    assert record["lines"] == [f"{m} f=1 {TS0}"]
    assert write(fault_server.url, f"{m} f=2 {TS0 + 1}").status == 204
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + 1, 2.0)]}


@pytest.mark.parametrize(
    ("status", "code", "prefix"),
    [
        (400, "invalid", "partial write: "),
        (422, "unprocessable entity", "failure writing points to database: partial write: "),
    ],
)
def test_partial_forwards_only_the_first_half(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics, status: int, code: str, prefix: str
) -> None:
    m = measurement()
    lines = [f"{m} f={i} {TS0 + i}" for i in range(5)]
    fault_server.set_faults([{"mode": "partial", "status": status, "count": 1}])

    reply = write(fault_server.url, "\n".join(lines))

    assert reply.status == status
    assert reply.json()["code"] == code
    assert (
        reply.json()["message"]
        == prefix
        + "\n".join(f"unable to parse '{line}': invalid field format" for line in lines[2:])
        + " dropped=3"
    )
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0, 0.0), (TS0 + 1, 1.0)]}
    [record] = fault_server.requests()
    assert (record["outcome"], record["forwarded_lines"], record["line_count"]) == ("partial", 2, 5)


def test_reject_matching_drops_only_the_matching_lines(
    fault_server: FaultServer, _victoria_metrics: VictoriaMetrics
) -> None:
    m = measurement()
    fault_server.set_faults([{"status": 400, "reject_matching": "k=BAD", "count": 1}])
    bad = f"{m},k=BAD f=2 {TS0 + 1}"

    reply = write(fault_server.url, f"{m},k=ok f=1 {TS0}\n{bad}\n{m},k=ok f=3 {TS0 + 2}\n")
    assert reply.status == 400
    assert reply.json() == {
        "code": "invalid",
        "message": f"partial write: unable to parse '{bad}': invalid field format dropped=1",
    }
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0, 1.0), (TS0 + 2, 3.0)]}

    # Without a matching line the rule does not fire and keeps its count.
    assert write(fault_server.url, f"{m},k=ok f=4 {TS0 + 3}").status == 204
    assert fault_server.faults()[0]["count"] == 0
    fault_server.set_faults([{"status": 400, "reject_matching": "k=BAD", "count": 1}])
    assert write(fault_server.url, f"{m},k=ok f=5 {TS0 + 4}").status == 204
    assert fault_server.faults()[0]["count"] == 1


def test_delay_and_slow(fault_server: FaultServer, _victoria_metrics: VictoriaMetrics) -> None:
    m = measurement()
    fault_server.set_faults([{"status": 503, "delay_s": 0.5, "count": 1}, {"mode": "slow", "delay_s": 0.5}])

    started = time.monotonic()
    assert write(fault_server.url, f"{m} f=1 {TS0}").status == 503
    assert write(fault_server.url, f"{m} f=2 {TS0 + 1}").status == 204
    assert time.monotonic() - started >= 1.0
    assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + 1, 2.0)]}


def test_probability_is_reproducible_with_a_seed(fault_server: FaultServer) -> None:
    m = measurement()

    def statuses() -> list[int]:
        fault_server.set_faults([{"status": 503, "probability": 0.5}], seed=42)
        return [write(fault_server.url, f"{m} f={i} {TS0 + i}").status for i in range(16)]

    first = statuses()
    assert set(first) == {204, 503}
    assert statuses() == first
    assert fault_server.faults()[0]["fired"] == first.count(503)


def test_control_api_rejects_invalid_rules(fault_server: FaultServer) -> None:
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"stauts": 429}], "unknown rule key"),
        ([{"status": 429, "mode": "explode"}], "mode must be one of"),
        ([{"status": 429, "probability": 2}], "probability"),
        ([{"mode": "respond"}], 'needs a \\"status\\"'),
        ([{"status": 503, "reject_matching": "x"}], "status 400 or 422"),
    ]
    for rules, error in cases:
        with pytest.raises(RuntimeError, match="HTTP 400") as info:
            fault_server.set_faults(rules)
        assert error in str(info.value)
    assert fault_server.faults() == []


# --------------------------------------------------------------------------------------------------
# Token and record
# --------------------------------------------------------------------------------------------------


def test_token_check(_victoria_metrics: VictoriaMetrics) -> None:
    m = measurement()
    server = FaultServer.start(_victoria_metrics.url, token="s3cret")
    try:
        unauthorized = {"code": "unauthorized", "message": "unauthorized access"}
        missing = write(server.url, f"{m} f=1 {TS0}")
        assert (missing.status, missing.json()) == (401, unauthorized)
        wrong = write(server.url, f"{m} f=1 {TS0}", headers={"Authorization": "Token nope"})
        assert (wrong.status, wrong.json()) == (401, unauthorized)
        right = write(server.url, f"{m} f=2 {TS0 + 1}", headers={"Authorization": "Token s3cret"})
        assert right.status == 204

        assert _victoria_metrics.points(m) == {f"{m}_f": [(TS0 + 1, 2.0)]}
        records = server.requests(lines=True)
        assert [r["outcome"] for r in records] == ["unauthorized", "unauthorized", "forwarded"]
        assert "Authorization" not in records[0]["headers"]
        assert (
            records[1]["headers"]["Authorization"] == records[2]["headers"]["Authorization"] == "<redacted>"
        )
        assert "s3cret" not in json.dumps(records)
        assert "nope" not in json.dumps(records)
    finally:
        _assert_clean_exit(server)


def test_the_accepted_token_can_be_switched_at_runtime(_victoria_metrics: VictoriaMetrics) -> None:
    m = measurement()
    server = FaultServer.start(_victoria_metrics.url, token="A")
    try:
        assert write(server.url, f"{m} f=1 {TS0}", headers={"Authorization": "Token A"}).status == 204
        server.set_token("B")
        assert write(server.url, f"{m} f=2 {TS0}", headers={"Authorization": "Token A"}).status == 401
        assert write(server.url, f"{m} f=3 {TS0}", headers={"Authorization": "Token B"}).status == 204
        server.set_token(None)
        assert write(server.url, f"{m} f=4 {TS0}").status == 204
    finally:
        _assert_clean_exit(server)


def test_request_record_and_stats(fault_server: FaultServer) -> None:
    m = measurement()
    before_mono, before_wall = time.monotonic(), time.time()
    fault_server.set_faults([{"status": 500, "count": 1}])
    write(fault_server.url, f"{m} f=1 {TS0}\n\n# comment\n{m} f=2 {TS0 + 1}\r\n")
    write(fault_server.url, f"{m} f=3 {TS0 + 2}", headers={"Authorization": "Token x", "X-Batch": "7"})

    first, second = fault_server.requests()
    assert (first["id"], second["id"]) == (1, 2)
    assert before_mono <= first["arrival_monotonic"] <= second["arrival_monotonic"] <= time.monotonic()
    assert before_wall <= first["arrival_wall"] <= time.time()
    assert first["arrival_monotonic"] <= first["responded_monotonic"]
    assert (first["method"], first["path"]) == ("POST", "/api/v2/write")
    assert first["query"] == {"org": "org", "bucket": "bucket", "precision": "ms"}
    assert (first["status"], first["outcome"], first["fault_rule"], first["line_count"]) == (
        500,
        "fault",
        0,
        2,
    )
    assert first["body_size"] == len(f"{m} f=1 {TS0}\n\n# comment\n{m} f=2 {TS0 + 1}\r\n")
    assert (second["status"], second["outcome"], second["fault_rule"]) == (204, "forwarded", None)
    assert second["headers"]["Authorization"] == "<redacted>"
    assert second["headers"]["X-Batch"] == "7"
    assert "lines" not in first
    assert fault_server.requests(lines=True)[0]["lines"] == [f"{m} f=1 {TS0}", f"{m} f=2 {TS0 + 1}"]
    assert fault_server.stats() == {
        "total": 2,
        "in_flight": 0,
        "by_status": {"500": 1, "204": 1},
        "by_outcome": {"fault": 1, "forwarded": 1},
        "by_rule": {"0": 1},
        "lines_received": 3,
        "lines_forwarded": 1,
    }

    fault_server.clear_requests()
    assert fault_server.requests() == []
    assert fault_server.stats()["total"] == 0


def test_stops_cleanly_while_a_request_hangs(_victoria_metrics: VictoriaMetrics) -> None:
    server = FaultServer.start(_victoria_metrics.url)
    try:
        server.set_faults([{"mode": "hang"}])
        errors: list[BaseException] = []

        def client() -> None:
            try:
                write(server.url, f"{measurement()} f=1 {TS0}", timeout=30)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        wait_for(lambda: server.stats()["in_flight"] == 1)
        started = time.monotonic()
        _assert_clean_exit(server)
        assert time.monotonic() - started < 5
        thread.join(10)
        # The server closes the hanging connection when it stops: the client sees it dropped.
        assert len(errors) == 1
        assert isinstance(errors[0], ConnectionError | http.client.HTTPException)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Queries: recorded, answered with the test's bytes
# --------------------------------------------------------------------------------------------------

ANSWERS = Path(__file__).parent / "flux" / "answers"


def query(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
    """POST to ``/api/v2/query?org=org`` as influxdb-client does (JSON), with http.client."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request("POST", "/api/v2/query?org=org", body=body, headers=all_headers)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def test_a_query_gets_the_recorded_answers_byte_for_byte_in_order(fault_server: FaultServer) -> None:
    window = (ANSWERS / "window.csv").read_bytes()
    broken = (ANSWERS / "error_after_data.csv").read_bytes()
    assert broken.startswith(window.rstrip(b"\r\n")) and b",error,reference" in broken
    fault_server.set_query_answers(
        [{"body": broken.decode()}, {"body": window.decode()}, {"body": '{"code":"x"}', "status": 503}]
    )
    body = json.dumps({"query": 'from(bucket: "b")', "type": "flux"}).encode()

    first, second, third, fourth = (query(fault_server.url, body) for _ in range(4))

    # The error table comes after data rows, with status 200, as InfluxDB streams it.
    assert (first.status, first.body) == (200, broken)
    assert first.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert (second.status, second.body) == (200, window)
    assert (third.status, fourth.status, fourth.body) == (503, 503, b'{"code":"x"}')
    records = fault_server.queries()
    assert [r["id"] for r in records] == [1, 2, 3, 4]
    assert records[0]["path"] == "/api/v2/query"
    assert records[0]["query"] == {"org": "org", "orgID": None}
    assert [json.loads(r["body"]) for r in records] == [json.loads(body)] * 4
    assert [r["status"] for r in records] == [200, 200, 503, 503]
    assert fault_server.requests() == []  # the write record stays writes only
    fault_server.clear_queries()
    assert fault_server.queries() == []


def test_a_query_without_answers_is_empty_and_gzip_bodies_are_recorded_decompressed(
    fault_server: FaultServer,
) -> None:
    body = json.dumps({"query": "x = 1", "type": "flux"}).encode()
    reply = query(fault_server.url, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert (reply.status, reply.body) == (200, b"")
    assert fault_server.queries()[0]["body"] == body.decode()
    with pytest.raises(RuntimeError, match="HTTP 400"):
        fault_server.set_query_answers([{"status": 200}])


def test_a_query_with_a_wrong_token_is_refused(_victoria_metrics: VictoriaMetrics) -> None:
    server = FaultServer.start(_victoria_metrics.url, token="s3cret")
    try:
        server.set_query_answers([{"body": "ok"}])
        assert query(server.url, b"{}").status == 401
        assert query(server.url, b"{}", headers={"Authorization": "Token s3cret"}).body == b"ok"
        records = server.queries()
        assert [r["status"] for r in records] == [401, 200]
        assert "s3cret" not in json.dumps(records)
    finally:
        _assert_clean_exit(server)
