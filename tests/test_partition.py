"""A worker node cut off from Redis (issue #8, test 9): its lease lapses, another node finishes the chunk,
and the cut-off node's late commit is fenced.

Worker A runs in its own network namespace, joined to the root namespace by a veth pair; redis-server
and A's fault proxy listen on the veth's root-side address as well. "Cut off" is an nftables table in
A's namespace that silently drops A's traffic to and from Redis's port (a partition, not a refused
connection: A's requests get no answer at all), while A's writes to the route still go through. The
table lives in the namespace, so deleting the namespace at teardown removes it with the veth pair.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import cli, expected, landed, ledger, wait_for
from tests.faultserver import FaultServer
from tsbatch import datagen
from tsbatch.ledger import Ledger
from tsbatch.localstack import Process, Stack, children, to_toml

# One job of two 3,000-line chunks, each written in three 1,000-line batches. A's route holds every
# answer 1.5 s, so A's chunk lasts ~4.5 s; B writes straight to VictoriaMetrics.
LEASES = {"lease_ttl_s": 3, "heartbeat_s": 0.5, "batch_lines": 1_000, "writes_in_flight": 1}
SWEEP = {"sweep_interval_s": 1, "republish_after_s": 2}
SLOW = [{"mode": "slow", "delay_s": 1.5}]
CHUNK_LINES = 3_000


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")


@dataclass
class Netns:
    """A network namespace joined to the root one by a veth pair (``root_addr`` on the root side)."""

    name: str
    veth_root: str
    veth_ns: str
    root_addr: str
    ns_addr: str
    is_cut: bool = False

    def exec(self, *argv: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], input=stdin, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.strip()}")

    def cut(self, port: int) -> None:
        """Drop every packet between the namespace and ``root_addr:port``, both ways, without a word:
        at the veth's egress and ingress hooks, below TCP, so that A's sockets see neither an error nor
        an answer (an ``output`` hook drop would fail A's connects at once with EPERM)."""
        dev = self.veth_ns
        rules = f"""
        table netdev tsbatch_cut {{
          chain egress {{
            type filter hook egress device "{dev}" priority 0; policy accept;
            ip daddr {self.root_addr} tcp dport {port} drop
          }}
          chain ingress {{
            type filter hook ingress device "{dev}" priority 0; policy accept;
            ip saddr {self.root_addr} tcp sport {port} drop
          }}
        }}
        """
        self.exec("nft", "-f", "-", stdin=rules)
        self.is_cut = True

    def restore(self) -> None:
        if self.is_cut:
            self.exec("nft", "delete", "table", "netdev", "tsbatch_cut")
            self.is_cut = False


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.254.0.0/16 that no address or route of this machine overlaps."""
    used = []
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for word in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split():
            with contextlib.suppress(ValueError):
                if "/" in word or word.count(".") == 3:
                    used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(100):
        net = ipaddress.ip_network(f"10.254.{random.randrange(256)}.{random.randrange(64) * 4}/30")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /30 in 10.254.0.0/16")


@pytest.fixture
def netns() -> Iterator[Netns]:
    # Namespaces, veth pairs and nftables need root and two programs that `make setup` installs
    # (iproute2, nftables): say so rather than pass without testing anything.
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root (CAP_NET_ADMIN)")
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run `make setup` (installs iproute2 and nftables)")
    tag = uuid.uuid4().hex[:8]  # unique per run: several runs on one machine do not collide
    net = _free_subnet()
    root_addr, ns_addr = (str(h) for h in net.hosts())
    ns = Netns(f"tsbatch-{tag}", f"tsbr-{tag}", f"tsbn-{tag}", root_addr, ns_addr)
    try:
        _run("ip", "netns", "add", ns.name)
        _run("ip", "link", "add", ns.veth_root, "type", "veth", "peer", "name", ns.veth_ns, "netns", ns.name)
        _run("ip", "addr", "add", f"{root_addr}/30", "dev", ns.veth_root)
        _run("ip", "link", "set", ns.veth_root, "up")
        ns.exec("ip", "addr", "add", f"{ns_addr}/30", "dev", ns.veth_ns)
        ns.exec("ip", "link", "set", ns.veth_ns, "up")
        ns.exec("ip", "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting one end of a veth pair deletes both; the namespace takes its nftables table along.
        subprocess.run(["ip", "link", "del", ns.veth_root], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30)


def _holder_pid(value: str | None) -> int | None:
    """The pid in a lease value ``"<token>|<host>:<pid>"``."""
    return int(value.rsplit(":", 1)[1]) if value else None


def _leases(stack: Stack) -> dict[str, str]:
    client = ledger(stack).redis
    return {str(k).split(":lease:", 1)[1]: str(client.get(k)) for k in client.scan_iter("tsbatch:lease:*")}


def _config_for_netns(stack: Stack, ns: Netns, route_url: str) -> Path:
    """The stack's settings with Redis and the route at addresses the namespace can reach."""
    settings = {**stack.settings, "redis": {"url": f"redis://{ns.root_addr}:{stack.redis.port}/0"}}
    settings["routes"] = {"default": {**stack.settings["routes"]["default"], "url": route_url}}
    path = stack.workdir / f"tsbatch-{ns.name}.toml"
    path.write_text(to_toml(settings))
    return path


def _only_child(worker: Process) -> int:
    [child] = children(worker.proc.pid)
    return child


@dataclass
class Scene:
    stack: Stack
    book: Ledger
    proxy_a: FaultServer
    job: str
    key: str  # the chunk A holds when it is cut off
    a_pid: int  # A's pool child, the holder named in the lease


def _cut_off_worker_a(
    netns: Netns,
    make_stack: Callable[..., Stack],
    fault_proxy: Callable[..., FaultServer],
    data_dir: Path,
    *,
    after_lines: int,
) -> Scene:
    """Start worker A in the namespace, produce two chunks, and cut A off from Redis once its route has
    received ``after_lines`` lines of the chunk A claimed. B is not started yet."""
    stack = make_stack(
        producer={"chunk_lines": CHUNK_LINES},
        worker=LEASES,
        ledger=SWEEP,
        redis_also_bind=[netns.root_addr],
    )
    proxy_a = fault_proxy(stack.routes["default"].url, host=netns.root_addr)  # records what A writes
    proxy_a.set_faults(SLOW)
    config_a = _config_for_netns(stack, netns, proxy_a.url)
    a = stack.start_worker(name="a", netns=netns.name, extra_env={"TSBATCH_CONFIG": str(config_a)})
    a_pid = _only_child(a)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=30, points_per_series=200)  # two chunks
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    # A claims one chunk; with B not started, the other one waits in the queue for B.
    key = wait_for(
        lambda: next((k for k, v in _leases(stack).items() if _holder_pid(v) == a_pid), None),
        timeout=30,
        what="A to claim a chunk",
    )
    wait_for(
        lambda: sum(r["line_count"] for r in proxy_a.requests()) >= after_lines,
        timeout=30,
        what=f"A to write {after_lines} lines",
    )
    netns.cut(stack.redis.port)
    assert _holder_pid(_leases(stack).get(key)) == a_pid, "A no longer held the chunk when it was cut off"
    return Scene(stack, ledger(stack), proxy_a, job, key, a_pid)


def _b_finishes_the_chunk(scene: Scene) -> None:
    """B, in the root namespace, takes the queued chunk; once A's unrenewed lease lapses, B's sweeper
    publishes A's chunk again and B commits it, while A is still cut off."""
    book = scene.book
    b_pid = _only_child(scene.stack.start_worker(name="b"))
    wait_for(
        lambda: book.unit(scene.key).get("state") == "committed", timeout=40, what="B to commit A's chunk"
    )
    unit = book.unit(scene.key)
    assert _holder_pid(unit["worker"]) == b_pid
    assert int(unit["attempts"]) >= 2
    stats = book.stats()
    assert stats.get("republished", 0) >= 1
    assert stats.get("commit_fenced", 0) == 0  # nothing of A's has reached Redis yet


def _everything_committed_once(scene: Scene) -> None:
    book = scene.book
    # A's copy of the message comes back (a Celery retry after its lease was found lost) and is acked
    # as done: A is through with the chunk.
    wait_for(lambda: book.stats().get("redelivered_done", 0) >= 1, timeout=30, what="A to give up")
    status = wait_for(lambda: (s := book.job(scene.job)).done and s, timeout=30, what="the job")
    assert (status.committed, status.dead, status.points) == (2, 0, 6_000)
    assert book.stats()["commits"] == 2  # one per chunk: A's attempt did not count
    got = landed(scene.stack.routes["default"].url)
    # VictoriaMetrics keeps rewritten samples (InfluxDB would overwrite them): compare distinct ones.
    assert {k: sorted(set(v)) for k, v in got.items()} == expected(30, 200)


def test_a_worker_cut_off_from_redis_mid_chunk_loses_its_lease_another_finishes_and_its_commit_is_fenced(
    netns: Netns, make_stack, fault_proxy, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    # netns first: set up before the stack and so torn down after it, once the workers have stopped (a
    # worker whose Redis vanished first would spend its whole shutdown timeout reconnecting). For the
    # same reason a failure while A is cut off reconnects A before the workers are stopped.
    request.addfinalizer(netns.restore)
    # Cut A off while its last batch is in the route's hands: A finishes its writes cut off, then
    # attempts its commit, which waits for Redis. (Cut off sooner, A stalls at its next write: see the
    # next test.)
    scene = _cut_off_worker_a(netns, make_stack, fault_proxy, data_dir, after_lines=CHUNK_LINES)
    _b_finishes_the_chunk(scene)
    # A wrote every line of its chunk while cut off (points B wrote again: InfluxDB overwrites them).
    requests_a = scene.proxy_a.requests()
    assert sum(r["line_count"] for r in requests_a) == CHUNK_LINES
    assert all(r["status"] == 204 for r in requests_a)

    # Reconnected, A's pending commit reaches Redis and is fenced: its lease is gone.
    netns.restore()
    wait_for(
        lambda: scene.book.stats().get("commit_fenced", 0) >= 1, timeout=30, what="A's commit to be fenced"
    )
    _everything_committed_once(scene)


def test_a_worker_cut_off_from_redis_at_its_first_write_stalls_and_never_commits_the_chunk(
    netns: Netns, make_stack, fault_proxy, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(netns.restore)  # see the test above
    scene = _cut_off_worker_a(netns, make_stack, fault_proxy, data_dir, after_lines=1)
    _b_finishes_the_chunk(scene)
    # A's writer reads the route's shared Retry-After pause from Redis before a write (at most every
    # 0.1 s): cut off, A waits there and never sends its last batch (the second one may have gone out
    # with the first, from the same reading: one write in flight and the next one sent).
    assert sum(r["line_count"] for r in scene.proxy_a.requests()) < CHUNK_LINES

    # Reconnected, A either finds its lease lost at once (its heartbeat) and stops between batches, or
    # sends a batch or two more (overwrites) first; if it got as far as a commit, that would be fenced.
    # Whichever it does, the chunk stays committed once, by B.
    netns.restore()
    _everything_committed_once(scene)
