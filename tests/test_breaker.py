"""The circuit breaker and the throttle are shared by every worker process through Redis."""

from __future__ import annotations

import time
import uuid

from tsbatch.ledger import connect
from workers.breaker import RouteGuard


def _guards(url: str, n: int = 2, **kwargs: float) -> list[RouteGuard]:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    settings = {"threshold": 3, "cooldown_s": 0.3, **kwargs}
    return [RouteGuard(connect(url), prefix=prefix, **settings) for _ in range(n)]  # type: ignore[arg-type]


def test_the_breaker_opens_after_consecutive_failures_counted_across_processes(redis_server: str) -> None:
    a, b = _guards(redis_server)
    assert not a.failure("hot", kind="transient", reason="503")
    assert not b.failure("hot", kind="transient", reason="503")
    assert a.allow("hot").allowed

    opened = b.failure("hot", kind="transient", reason="503 unavailable")

    verdict = a.allow("hot")
    assert opened and verdict.state == "open" and 0 < verdict.wait_s <= 0.3
    assert (verdict.kind, verdict.reason) == ("transient", "503 unavailable")
    assert a.allow("cold").allowed  # per route


def test_a_success_resets_the_count_of_consecutive_failures(redis_server: str) -> None:
    [a] = _guards(redis_server, 1)
    a.failure("hot", kind="transient", reason="x")
    a.failure("hot", kind="transient", reason="x")
    a.success("hot")
    assert not a.failure("hot", kind="transient", reason="x")
    assert a.allow("hot").allowed


def test_after_the_cooldown_exactly_one_probe_goes_and_its_outcome_decides(redis_server: str) -> None:
    a, b = _guards(redis_server, threshold=1)
    a.failure("hot", kind="transient", reason="timeout")
    time.sleep(0.35)

    first, second = a.allow("hot"), b.allow("hot")

    assert (first.state, second.state) == ("probe", "open")
    assert b.failure("hot", kind="transient", reason="timeout again")  # the failed probe re-opens it
    assert a.allow("hot").state == "open"
    time.sleep(0.35)
    assert b.allow("hot").state == "probe"
    b.success("hot")
    assert a.allow("hot").state == "closed" and b.allow("hot").state == "closed"


def test_a_retry_after_pauses_every_worker_and_is_never_shortened(redis_server: str) -> None:
    a, b = _guards(redis_server)
    assert b.paused_for("hot") == 0
    a.pause("hot", 2.0)
    b.pause("hot", 0.5)  # a shorter pause must not cut the longer one
    assert 1.5 < b.paused_for("hot") <= 2.0
    assert a.paused_for("cold") == 0
