"""``make demo``: a million points through the whole pipeline on this machine, and read back.

Starts redis-server and VictoriaMetrics (which speaks the InfluxDB v2 write API) on free ports, two
workers and Flower; writes a line-protocol file; runs ``tsbatch produce --wait`` as a user would; then
reads everything back from VictoriaMetrics and checks that every point landed exactly once.

    .venv/bin/python scripts/demo.py [--series 1000] [--steps 1000] [--keep]

With TSBATCH_CONFIG set, the demo uses that configuration's Redis and route (``--route``) instead of
starting its own, on a private queue so that the user's other workers never see its chunks.
Exit status: 0 verified, 1 verification failed, 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from config import CONFIG_ENV, ConfigError, load_settings
from tsbatch import datagen
from tsbatch.localstack import Process, Stack, start_stack, vm_export_settled

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / "var" / "demo"
DATA_DIR = WORKDIR / "data"
STACK_DIR = WORKDIR / "stack"
PIDS_FILE = STACK_DIR / "pids"  # written by --keep, so the next run does not wipe a running stack
FIELDS = ("usage", "count")  # datagen writes two fields a point: two samples in VictoriaMetrics
# Only the demo's own series, in case the route is a VictoriaMetrics that holds other data too.
DEMO_SERIES = '{__name__=~"cpu_(usage|count)",host=~"h[0-9]+"}'
FLOWER_USER = "admin"


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def rel(path: Path) -> str:
    """``path`` as the user would type it from the current directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def checkout_id() -> str:
    """Stable for this checkout on this host: its own queue, without a new one in Redis every run."""
    return hashlib.sha256(f"{socket.gethostname()}:{DATA_DIR}".encode()).hexdigest()[:8]


# -- the stack ----------------------------------------------------------------------------------------


class UserStack(Stack):
    """The user's own Redis and routes (TSBATCH_CONFIG): only the workers and Flower are the demo's.

    Its processes see the user's settings with three overrides: the demo's data directory as the only
    source root, a private queue (the user's workers would dead-letter chunks outside their roots, and
    the demo's workers must not take the user's), and Flower on the loopback address.
    """

    def __init__(self, workdir: Path, config: Path) -> None:  # no redis or routes of its own to start
        self.workdir = workdir
        self.config = config
        self.routes: dict[str, Process] = {}
        self.workers: list[Process] = []
        self.flower: Process | None = None
        self.settings: dict[str, Any] = {}
        self.overrides = {
            "TSBATCH_SOURCES__ROOTS": json.dumps([str(DATA_DIR)]),
            "TSBATCH_PRODUCER__QUEUE": f"tsbatch.demo-{checkout_id()}",
            "TSBATCH_FLOWER__ADDRESS": "127.0.0.1",
        }

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.overrides, "PYTHONUNBUFFERED": "1"}

    def stop(self) -> None:
        for p in [*self.workers, *([self.flower] if self.flower else [])]:
            p.stop(timeout=60)


@dataclass
class Target:
    """Where the demo writes: a stack and the route (a VictoriaMetrics URL, if it can be read back)."""

    stack: Stack
    route: str
    route_url: str
    own: bool  # True when the demo started Redis and VictoriaMetrics itself


def open_target(route: str) -> Target:
    config = os.environ.get(CONFIG_ENV)
    if not config:
        stack = start_stack(STACK_DIR, roots=[DATA_DIR], routes=(route,))
        return Target(stack, route, stack.routes[route].url, own=True)
    user = UserStack(STACK_DIR, Path(config))
    os.environ.update(user.overrides)  # so that load_settings() here sees what the workers will see
    settings = load_settings()
    return Target(user, route, settings.route(route).url, own=False)


def start_services(stack: Stack) -> None:
    """Two single-process workers, and Flower behind basic auth with a fresh password."""
    for name in ("w1", "w2"):
        stack.start_worker(concurrency=1, name=name)
    password = secrets.token_urlsafe(16)
    flower = stack.start_flower(user=FLOWER_USER, password=password)
    say(
        f"workers w1, w2 and Flower started; logs in {rel(STACK_DIR)}/",
        f"Flower: {flower.url}  user {FLOWER_USER}  password {password}  (shown only once)",
    )


# -- the work -----------------------------------------------------------------------------------------


def fresh_workdir() -> None:
    """Wipe var/demo, unless a stack kept by an earlier ``--keep`` still runs from it."""
    if PIDS_FILE.is_file():
        alive = [pid for pid in map(int, PIDS_FILE.read_text().split()) if _alive(pid)]
        if alive:
            pids = " ".join(map(str, alive))
            raise SystemExit(
                f"a demo kept with --keep still runs from {rel(WORKDIR)}: stop it first: kill {pids}"
            )
    shutil.rmtree(WORKDIR, ignore_errors=True)
    DATA_DIR.mkdir(parents=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def generate(series: int, steps: int) -> Path:
    source = DATA_DIR / "cpu.lp"
    began = time.monotonic()
    points = datagen.write(source, "lp", series=series, points_per_series=steps)
    secs = time.monotonic() - began
    mb = source.stat().st_size / 1e6
    say(f"generated {points:,} points ({series:,} series x {steps:,} steps, {mb:.0f} MB) in {secs:.1f} s")
    return source


def produce(stack: Stack, source: Path, route: str) -> str:
    """Run ``tsbatch produce --wait`` as a user would; returns the job id (its first stdout line).

    stdout is echoed as it comes, stderr (the progress bar) goes straight to the terminal.
    """
    argv = stack.tsbatch("produce", str(source), "--route", route, "--wait")
    say(f"$ tsbatch produce {rel(source)} --route {route} --wait")
    lines: list[str] = []
    with subprocess.Popen(argv, env=stack.env(), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.strip())
    if not lines:
        raise RuntimeError(f"tsbatch produce printed no job id (exit status {proc.returncode})")
    return lines[0]


def job_figures(stack: Stack, job: str) -> dict[str, Any]:
    """The job's figures as ``tsbatch status JOB --json`` reports them."""
    done = subprocess.run(
        stack.tsbatch("status", job, "--json"), env=stack.env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"tsbatch status {job} failed: {done.stderr.strip()}")
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return figures


# -- verification -------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    text: str


def check_ledger(figures: dict[str, Any], points: int) -> Check:
    ok = (
        figures["points"] == points
        and figures["committed"] == figures["chunks"]
        and figures["dead"] == 0
        and figures["rejected_lines"] == 0
    )
    text = (
        f"ledger: {figures['points']:,} of {points:,} points in {figures['committed']}/{figures['chunks']} "
        f"committed chunks, {figures['dead']} dead-lettered, {figures['rejected_lines']} rejected lines"
    )
    return Check(ok, text)


def read_back(vm_url: str, expect: int) -> tuple[Counter[tuple[str, str]], int]:
    """Distinct timestamps per (metric, host), and the number of samples including duplicates, read
    once ``expect`` samples are visible (or the export stops changing)."""
    per_series: Counter[tuple[str, str]] = Counter()
    samples = 0
    for row in vm_export_settled(vm_url, DEMO_SERIES, expect_samples=expect):
        per_series[(row["metric"]["__name__"], row["metric"].get("host", ""))] += len(set(row["timestamps"]))
        samples += len(row["timestamps"])
    return per_series, samples


def check_read_back(target: Target, series: int, steps: int) -> list[Check]:
    want = len(FIELDS) * series * steps
    try:
        per_series, samples = read_back(target.route_url, want)
    except urllib.error.URLError as e:  # e.g. a real InfluxDB: it has no /api/v1/export
        return [Check(not target.own, f"read-back: skipped, {target.route_url} is not VictoriaMetrics ({e})")]
    distinct = sum(per_series.values())
    expected = {(f"{datagen.MEASUREMENT}_{f}", datagen.host(i)) for f in FIELDS for i in range(series)}
    missing = expected - per_series.keys()
    uneven = [k for k in expected & per_series.keys() if per_series[k] != steps]
    # A VictoriaMetrics of the demo's own must hold each sample once. One of the user's may also hold
    # the points of earlier runs (it keeps duplicates where InfluxDB overwrites): count distinct ones.
    counted = samples if target.own else distinct
    series_text = f"series: {len(expected) - len(missing):,} of {len(expected):,} present"
    if uneven:
        series_text += f", {len(uneven):,} without exactly {steps:,} timestamps"
    return [
        Check(counted == want, f"read-back: {samples:,} samples ({distinct:,} distinct), expected {want:,}"),
        Check(not missing and not uneven, series_text),
    ]


# -- output -------------------------------------------------------------------------------------------


def summary(figures: dict[str, Any], checks: list[Check]) -> bool:
    ok = all(c.ok for c in checks)
    say(
        "",
        "== demo summary " + "=" * 60,
        f"points        {figures['points']:,}",
        f"seconds       {figures['seconds']}  (job created to last chunk committed)",
        f"points/s      {figures['points_per_s']:,}",
        *(f"  {'OK    ' if c.ok else 'FAILED'}  {c.text}" for c in checks),
        f"verification  {'OK' if ok else 'FAILED'}",
        f"logs          {rel(STACK_DIR)}/  ({', '.join(sorted(p.name for p in STACK_DIR.glob('*.log')))})",
        "=" * 76,
    )
    return ok


def keep_running(target: Target, job: str) -> None:
    stack = target.stack
    procs = [*stack.workers, *([stack.flower] if stack.flower else []), *stack.routes.values()]
    if target.own:
        procs.append(stack.redis)
    pids = [str(p.proc.pid) for p in procs]
    PIDS_FILE.write_text(" ".join(pids) + "\n")
    env = f"{CONFIG_ENV}={rel(stack.config)}"
    if isinstance(stack, UserStack):  # the same private queue and source root as the demo's workers
        env += "".join(f" {k}={shlex.quote(v)}" for k, v in stack.overrides.items())
    say(
        "",
        "The stack keeps running (--keep). Try:",
        f"  {env} .venv/bin/tsbatch status {job}",
        f"  {env} .venv/bin/tsbatch dlq list --job {job}",
        f"  {env} .venv/bin/tsbatch produce {rel(DATA_DIR)}/cpu.lp --route {target.route} --wait",
        f"Flower: {stack.flower.url if stack.flower else '-'} (user {FLOWER_USER}, password above)",
        f"Stop it: kill {' '.join(pids)}",
    )


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=1_000, help="hosts (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1_000, help="points per host (default: %(default)s)")
    parser.add_argument("--route", default="default", help="route to write to (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    if args.series < 1 or args.steps < 1:
        parser.error("--series and --steps must be positive")
    return args


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # unwinds through the finally that stops the stack


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends.

    localstack tracks a process only once it is ready, so an interrupt while it waits (at most a
    minute) would leave that process running. A handler, unlike SIG_IGN or a blocked signal mask, is
    not inherited by the processes started meanwhile.
    """
    received: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    fresh_workdir()
    target: Target | None = None
    kept = False
    try:
        with interrupts_deferred():
            target = open_target(args.route)
        source = generate(args.series, args.steps)
        with interrupts_deferred():
            start_services(target.stack)
        job = produce(target.stack, source, target.route)
        figures = job_figures(target.stack, job)
        checks = [check_ledger(figures, args.series * args.steps)]
        checks += check_read_back(target, args.series, args.steps)
        ok = summary(figures, checks)
        if args.keep:
            keep_running(target, job)
            kept = True
        return 0 if ok else 1
    finally:
        if target is not None and not kept:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan processes
            ours = "workers, Flower, VictoriaMetrics and redis-server" if target.own else "workers and Flower"
            say(f"stopping {ours}")
            target.stack.stop()


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run(args)
    except ConfigError as e:
        say(f"configuration: {e}")
        return 2
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
