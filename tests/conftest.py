"""Fixtures: every test gets its own real redis-server, VictoriaMetrics and worker processes on free
ports, started here and stopped after, so nothing depends on services already on this machine."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tsbatch import datagen
from tsbatch.ledger import Ledger, connect
from tsbatch.localstack import Stack, start_stack, vm_export_settled, vm_rows_inserted
from workers.runtime import TEARDOWN_ERRORS

Series = dict[tuple[str, str], list[tuple[int, float]]]


def shared_testdata() -> Path:
    """The real files of ``../shared/testdata`` (InfluxDB annotated-CSV exports), used in place: beside
    this checkout, or beside the one it was cloned from (CI runs a fresh clone elsewhere), or where
    ``TSBATCH_TESTDATA`` says."""
    import os

    candidates = [Path(os.environ["TSBATCH_TESTDATA"])] if os.environ.get("TSBATCH_TESTDATA") else []
    here = Path(__file__).resolve().parents[1]
    candidates += [p / "shared" / "testdata" for p in here.parents]
    candidates.append(Path("/work/shared/testdata"))
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError("../shared/testdata not found: set TSBATCH_TESTDATA")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def make_stack(tmp_path: Path, data_dir: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kwargs: Any) -> Stack:
        stack = start_stack(tmp_path / f"stack{len(stacks)}", roots=[data_dir], **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    for stack in stacks:
        for worker in stack.workers:
            text = worker.log.read_text(errors="replace")
            found = [m for m in TEARDOWN_ERRORS if m in text]
            assert not found, f"{worker.log}: {found}"


def cli(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        stack.tsbatch(*args), env=stack.env(), capture_output=True, text=True, timeout=timeout
    )


def ledger(stack: Stack) -> Ledger:
    return Ledger(connect(stack.redis_url), prefix="tsbatch")


def landed(vm_url: str) -> Series:
    """What VictoriaMetrics holds, by (metric, host): sorted (ms, value) samples, duplicates kept,
    read once every row it acknowledged is visible."""
    out: Series = defaultdict(list)
    for row in vm_export_settled(vm_url, expect_samples=vm_rows_inserted(vm_url)):
        key = (row["metric"]["__name__"], row["metric"].get("host", ""))
        out[key].extend(zip(row["timestamps"], row["values"], strict=True))
    return {k: sorted(v) for k, v in out.items()}


def expected(series: int, points_per_series: int) -> Series:
    out: Series = {}
    for i in range(series):
        usage, count = [], []
        for k in range(points_per_series):
            u, c = datagen.value(i, k)
            ms = datagen.BASE_MS + k * 1000
            usage.append((ms, u))
            count.append((ms, float(c)))
        out[("cpu_usage", datagen.host(i))] = usage
        out[("cpu_count", datagen.host(i))] = count
    return out


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., Any]]:
    """Start fault-injection servers in front of a real VictoriaMetrics; all stopped after the test."""
    from tests.faultserver import FaultServer

    servers: list[FaultServer] = []

    def start(upstream: str, **kwargs: Any) -> FaultServer:
        server = FaultServer.start(upstream, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_for(check: Callable[[], Any], *, timeout: float = 120, what: str = "condition") -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for tests that need only Redis; each test uses its own key prefix."""
    from tsbatch.localstack import start_redis

    proc = start_redis(tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{proc.port}/0"
    proc.stop()


def descriptor_for(data: bytes, *, format: str, first_line: int = 1, **fields: Any) -> Any:
    """A descriptor over ``data`` for tests that only parse (no file, no key)."""
    from tsbatch.descriptor import ChunkDescriptor

    return ChunkDescriptor.model_validate(
        {
            "schema_version": 1,
            "job_id": "j",
            "path": f"/x.{format}",
            "file_size": len(data),
            "file_mtime_ns": 0,
            "chunk_sha256": "0" * 64,
            "start": 0,
            "end": len(data),
            "first_line": first_line,
            "line_count": data.count(b"\n") + 1,
            "format": format,
            "route": "r",
            **fields,
        }
    )
