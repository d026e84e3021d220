"""``tsbatch status`` without a job: what the whole system is doing, from the ledger alone.

One snapshot (``snapshot``) feeds three renderings: a live view refreshing every second on a terminal
(rich), plain text when stdout is not a terminal, and ``--json`` for scripts. Rates and ETAs come from
two snapshots a second apart; nothing here needs the workers' stack or influxdb-client.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from config import Settings
from tsbatch.breaker import RouteGuard
from tsbatch.ledger import Ledger, now_ms
from tsbatch.windows import due_end, iso

ACTIVE_WINDOW_MS = 60_000  # a finished job stays in view this long after its last commit
NODE_SILENT_S_FACTOR = 3  # a node unheard for this many sweep intervals is shown as silent


@dataclass
class JobView:
    job: str
    units: int
    committed: int
    dead: int
    points: int
    rejected: int
    done: bool
    planning: str
    points_per_s: float = 0.0
    eta_s: float | None = None


@dataclass
class Snapshot:
    at: str
    queue_depth: int
    jobs: list[JobView] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    windows: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    dead_letters: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def snapshot(
    settings: Settings, ledger: Ledger, guard: RouteGuard, previous: Snapshot | None = None
) -> Snapshot:
    now = now_ms()
    snap = Snapshot(at=iso(now // 1000), queue_depth=int(ledger.redis.llen(settings.producer.queue)))
    stats = ledger.stats()
    snap.retries = stats.get("task_retries", 0) + stats.get("retries", 0)
    snap.dead_letters = stats.get("dead_letters", 0)
    before = {j.job: j for j in previous.jobs} if previous else {}
    for job_id in ledger.recent_jobs():
        st = ledger.job(job_id)
        if st.done and now - max(st.last_ms, st.created_ms) > ACTIVE_WINDOW_MS:
            continue
        view = JobView(
            job_id,
            st.units,
            st.committed,
            st.dead,
            st.points,
            st.rejected,
            st.done,
            "done"
            if st.done
            else "interrupted"
            if st.interrupted
            else "running"
            if st.planned
            else "planning",
        )
        prev = before.get(job_id)
        if prev is not None and previous is not None:
            view.points_per_s = max(st.points - prev.points, 0) / 1.0
            rate = (st.committed + st.dead) - (prev.committed + prev.dead)
            left = st.units - st.committed - st.dead
            view.eta_s = left / rate if rate > 0 and left > 0 else None
        snap.jobs.append(view)
    for state in guard.states(sorted(settings.routes)):
        snap.routes.append(state.to_json())
    silent_after = settings.ledger.sweep_interval_s * NODE_SILENT_S_FACTOR * 1000
    for node, info in ledger.nodes().items():
        age = (now - int(info.get("seen_ms", 0))) / 1000
        snap.nodes.append(
            {
                "node": node,
                "processes": info.get("processes"),
                "pid": info.get("pid"),
                "last_heartbeat_s": round(age, 1),
                "silent": age * 1000 > silent_after,
            }
        )
    for name, job in sorted(settings.jobs.items()):
        marks = {k: int(v) for k, v in ledger.redis.hgetall(ledger.window_key(name)).items() if k != "def"}
        if "watermark" not in marks:
            snap.windows.append({"job": name, "watermark": None, "due": None})
            continue
        due = max(
            (due_end(time.time(), every=job.every, offset=job.offset) - marks["watermark"]) // job.every, 0
        )
        snap.windows.append({"job": name, "watermark": iso(marks["watermark"]), "due": due})
    return snap


def plain(snap: Snapshot) -> str:
    """The snapshot as plain text (stdout not a terminal)."""
    lines = [
        f"tsbatch status at {snap.at}: queue {snap.queue_depth}, retries {snap.retries}, "
        f"dead letters {snap.dead_letters}"
    ]
    for j in snap.jobs:
        eta = f", ETA {j.eta_s:.0f}s" if j.eta_s is not None else ""
        lines.append(
            f"job {j.job}: {j.committed + j.dead}/{j.units} units ({j.dead} dead), {j.points} points, "
            f"{j.points_per_s:,.0f} points/s{eta} [{j.planning}]"
        )
    for r in snap.routes:
        pause = f", paused {r['paused_for_s']:.1f}s" if r.get("paused_for_s") else ""
        lines.append(f"route {r['route']}: breaker {r['breaker']} ({r['failures']} failures){pause}")
    for n in snap.nodes:
        silent = " SILENT" if n["silent"] else ""
        lines.append(
            f"node {n['node']}: {n['processes']} processes, heartbeat {n['last_heartbeat_s']}s ago{silent}"
        )
    for w in snap.windows:
        lines.append(f"windows {w['job']}: watermark {w['watermark']}, {w['due']} due")
    return "\n".join(lines)


def rich_view(snap: Snapshot) -> Any:
    """The snapshot as rich renderables: a table per section, a progress bar per job."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_row(
        f"[bold]tsbatch[/] {snap.at}",
        f"queue [bold]{snap.queue_depth}[/]",
        f"retries {snap.retries}",
        f"dead letters [red]{snap.dead_letters}[/]",
    )
    jobs = Table(title="jobs", expand=True)
    jobs.add_column("job", no_wrap=True, min_width=24)  # job ids are 23 characters: never cut
    for col in ("progress", "units", "points/s", "ETA", "dead", "state"):
        jobs.add_column(col)
    for j in snap.jobs:
        bar = ProgressBar(total=max(j.units, 1), completed=j.committed + j.dead, width=24)
        eta = f"{j.eta_s:.0f}s" if j.eta_s is not None else "-"
        jobs.add_row(
            j.job,
            bar,
            f"{j.committed + j.dead}/{j.units}",
            f"{j.points_per_s:,.0f}",
            eta,
            str(j.dead),
            j.planning,
        )
    routes = Table(title="routes", expand=True)
    for col in ("route", "breaker", "failures", "paused"):
        routes.add_column(col)
    for r in snap.routes:
        routes.add_row(r["route"], r["breaker"], str(r["failures"]), f"{r.get('paused_for_s', 0):.1f}s")
    nodes = Table(title="worker nodes", expand=True)
    for col in ("node", "processes", "heartbeat"):
        nodes.add_column(col)
    for n in snap.nodes:
        mark = " [red]silent[/]" if n["silent"] else ""
        nodes.add_row(n["node"], str(n["processes"]), f"{n['last_heartbeat_s']}s ago{mark}")
    windows = Table(title="scheduled windows", expand=True)
    for col in ("job", "watermark", "due"):
        windows.add_column(col)
    for w in snap.windows:
        windows.add_row(w["job"], str(w["watermark"]), str(w["due"]))
    return Group(head, jobs, routes, nodes, windows)
