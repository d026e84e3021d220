"""Test helpers for metrics: scrape a worker's /metrics, and run a real Prometheus (Debian ``prometheus``).

Prometheus is started on a free port with a configuration written here (JSON, which YAML reads) and
stopped by the caller's fixture, like every other server of the tests.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tsbatch.localstack import STARTUP_TIMEOUT_S, Process, _spawn, _wait, free_port, http_get

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample a worker's /metrics answers, by (name, labels)."""
    text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def start_prometheus(workdir: Path, targets: Sequence[str], *, rule_files: Sequence[Path] = ()) -> Process:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run `make setup` (it installs the Debian package prometheus)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(p) for p in rule_files],
                "scrape_configs": [{"job_name": "tsbatch", "static_configs": [{"targets": list(targets)}]}],
            }
        )
    )
    log = workdir / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = _spawn("prometheus", argv, log)
    prom = Process("prometheus", proc, log, port)
    _wait(lambda: http_get(f"{prom.url}/-/ready", 1) is not None, "prometheus", proc, log, STARTUP_TIMEOUT_S)
    return prom


def query(prom: Process, expr: str) -> list[Mapping[str, object]]:
    """An instant query's result vector."""
    url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    answer = json.loads(http_get(url, 10))
    assert answer["status"] == "success", answer
    result: list[Mapping[str, object]] = answer["data"]["result"]
    return result


def api(prom: Process, path: str) -> object:
    return json.loads(http_get(f"{prom.url}{path}", 10))["data"]
