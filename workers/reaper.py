"""The reaper: a thread in the worker's main process that tidies the metric files of dead pool children.

In multiprocess mode each child writes ``counter_<pid>.db``, ``histogram_<pid>.db`` and
``gauge_<mode>_<pid>.db``. A child that dies (``--max-tasks-per-child``, an OOM kill, SIGKILL, a crash)
leaves them behind, and ``worker_process_shutdown`` does not run for the abrupt ones. Left alone:

- its live gauges (writes in flight, loop lag) would go on counting: ``mark_process_dead`` removes them;
- its counters and histograms must keep counting (a counter that drops is a reset to Prometheus), but
  ``mark_process_dead`` leaves their files, so every child ever started adds files that every scrape
  reads: the directory and the scrape time grow without bound (prometheus/client_python#367).

So each dead child's counter, histogram and summary files are added, key by key, into one
``<type>_aggregate.db`` per type and then removed. The directory holds at most: the live children's
files, the main process's, and one aggregate per type, whose size is bounded by the label sets (no pid
label). Merging and scraping take the same lock: a scrape never sees a child's counts twice or not at
all while they move into the aggregate.

A child is dead when ``/proc/<pid>`` is gone, a zombie, or no longer a child of this process (a pid
reused by an unrelated process). Linux only, as the rest of the worker (``/proc/self/fd``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger("tsbatch.metrics")

AGGREGATE = "aggregate"
ADDITIVE = ("counter", "histogram", "summary")  # types whose samples of several processes add up


def file_pid(name: str) -> int | None:
    """The pid a metric file belongs to (``counter_123.db``, ``gauge_livesum_123.db``), else None."""
    if not name.endswith(".db"):
        return None
    tail = name[:-3].rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def pids_with_files(path: Path) -> set[int]:
    return {pid for name in os.listdir(path) if (pid := file_pid(name)) is not None}


def is_child_alive(pid: int, parent: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Fields after the command name, which may hold spaces or ')': state, ppid, ...
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state not in ("Z", "X") and int(ppid) == parent


def _read(path: Path) -> list[tuple[str, float]]:
    values: list[tuple[str, float]] = [
        (str(key), float(value)) for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path))
    ]
    return values


def fold_into_aggregate(path: Path, typ: str, pid: int) -> bool:
    """Add ``<typ>_<pid>.db`` into ``<typ>_aggregate.db`` (written aside, then renamed) and remove it."""
    source = path / f"{typ}_{pid}.db"
    if not source.exists():
        return False
    target = path / f"{typ}_{AGGREGATE}.db"
    totals: dict[str, float] = {}
    for f in (target, source):
        if f.exists():
            for key, value in _read(f):
                totals[key] = totals.get(key, 0.0) + value
    scratch = path / f"{typ}_{AGGREGATE}.db.tmp"  # not *.db: the collector never reads it
    scratch.unlink(missing_ok=True)
    out = MmapedDict(str(scratch))
    try:
        for key, value in totals.items():
            out.write_value(key, value, 0.0)
    finally:
        out.close()
    os.replace(scratch, target)
    source.unlink()
    return True


def reap(path: Path, pid: int) -> None:
    """Everything a dead child left: live gauges removed, counters folded into the aggregates."""
    multiprocess.mark_process_dead(pid, str(path))
    for name in os.listdir(path):
        if name.startswith("gauge_") and file_pid(name) == pid:
            # Non-live gauge modes: tsbatch uses none, and a dead process's gauge means nothing.
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink()
    for typ in ADDITIVE:
        fold_into_aggregate(path, typ, pid)


class Reaper(threading.Thread):
    """Every ``interval_s``, reap the children of this process that died since the last look."""

    def __init__(self, path: Path, *, interval_s: float, lock: threading.Lock) -> None:
        super().__init__(name="tsbatch-metrics-reaper", daemon=True)
        self.path = path
        self.interval_s = interval_s
        self.lock = lock
        self.parent = os.getpid()
        self.stopping = threading.Event()
        self.reaped = 0

    def reap_once(self) -> list[int]:
        with self.lock:
            dead = sorted(
                pid
                for pid in pids_with_files(self.path)
                if pid != self.parent and not is_child_alive(pid, self.parent)
            )
            for pid in dead:
                reap(self.path, pid)
            self.reaped += len(dead)
        return dead

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.reap_once()
            except Exception:  # a bad file must not stop the reaper: say so, try again next time
                log.exception("reaping dead children's metric files failed")

    def stop(self) -> None:
        self.stopping.set()
