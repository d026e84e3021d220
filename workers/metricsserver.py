"""``/metrics`` of one worker, served by its main process (never by a pool child: a server per child
would answer for 1/N of the worker, PostHog/posthog#56109).

What a scrape returns: the pool children's metrics merged from the multiprocess directory
(workers/metrics.py), the ledger's figures read from Redis (workers/ledgermetrics.py), and the
directory's own size and the reaper's count, to show that pid churn stays bounded (workers/reaper.py).
Started at ``worker_ready`` and stopped at ``worker_shutdown`` (workers/tasks.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from config import Settings, multiproc_dir
from workers.ledgermetrics import LedgerCollector
from workers.reaper import Reaper

log = logging.getLogger("tsbatch.metrics")


class ChildrenCollector:
    """The children's files, merged under the reaper's lock (see workers/reaper.py)."""

    def __init__(self, path: Path, lock: threading.Lock) -> None:
        self.inner = MultiProcessCollector(None, path=str(path))
        self.lock = lock

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            merged: list[Metric] = list(self.inner.collect())
        return iter(merged)


class DirCollector:
    """The multiprocess directory's size: bounded by the live children, whatever their churn."""

    def __init__(self, path: Path, reaper: Reaper) -> None:
        self.path = path
        self.reaper = reaper

    def collect(self) -> Iterator[Metric]:
        sizes = [e.stat().st_size for e in os.scandir(self.path) if e.name.endswith(".db")]
        yield GaugeMetricFamily(
            "tsbatch_metrics_dir_files", "Metric files in the multiprocess directory.", len(sizes)
        )
        yield GaugeMetricFamily("tsbatch_metrics_dir_bytes", "Bytes of those files.", sum(sizes))
        yield CounterMetricFamily(
            "tsbatch_metrics_reaped_processes",
            "Dead pool children whose metric files the reaper folded into the aggregates.",
            self.reaper.reaped,
        )


class MetricsServer:
    def __init__(self, settings: Settings, path: Path) -> None:
        lock = threading.Lock()
        self.reaper = Reaper(path, interval_s=settings.metrics.reap_interval_s, lock=lock)
        self.ledger = LedgerCollector(settings)
        self.registry = CollectorRegistry()
        self.registry.register(ChildrenCollector(path, lock))
        self.registry.register(self.ledger)
        self.registry.register(DirCollector(path, self.reaper))
        self.http: WSGIServer | None = None
        self.settings = settings

    def start(self) -> None:
        m = self.settings.metrics
        self.http, _thread = start_http_server(m.port, addr=m.address, registry=self.registry)
        self.reaper.start()
        log.info("metrics on http://%s:%d/metrics", m.address, m.port)

    def stop(self) -> None:
        self.reaper.stop()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        self.reaper.join(timeout=5)
        self.ledger.close()


_server: MetricsServer | None = None


def _multiprocess_active() -> bool:
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def start(settings: Settings) -> None:
    """Serve ``/metrics`` if ``metrics.port`` is set; say why not if the directory is not set up."""
    global _server
    if not settings.metrics.port or _server is not None:
        return
    path = multiproc_dir()
    if path is None or not path.is_dir() or not _multiprocess_active():
        # `celery -A workers worker` imports prometheus_client before any tsbatch code runs: only the
        # environment can set multiprocess mode up in time (docs/OPERATIONS.md "Metrics").
        log.error(
            "metrics.port is set but this worker has no prometheus multiprocess directory: start it with "
            "`tsbatch worker`, or export PROMETHEUS_MULTIPROC_DIR (an empty directory) before `celery`; "
            "metrics are off"
        )
        return
    server = MetricsServer(settings, path)
    try:
        server.start()
    except OSError as e:
        log.error(
            "metrics: cannot listen on %s:%d: %s; metrics are off",
            settings.metrics.address,
            settings.metrics.port,
            e,
        )
        server.stop()
        return
    _server = server


def stop(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
