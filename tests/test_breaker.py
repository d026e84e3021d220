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


def test_a_pause_is_capped_however_long_the_retry_after_and_clear_lifts_it_and_the_breaker(
    redis_server: str,
) -> None:
    [a] = _guards(redis_server, 1, threshold=1, max_pause_s=5)
    a.pause("hot", 99_999_999)
    a.failure("hot", kind="permanent", reason="401 unauthorized")

    [state] = a.states(["hot"])
    assert 4 < a.paused_for("hot") <= 5 and 4 < state.paused_for_s <= 5
    assert (state.breaker, state.kind, state.failures, state.held) == ("open", "permanent", 1, True)
    assert a.known_routes() == ["hot"]

    assert a.clear("hot") == 2
    assert a.paused_for("hot") == 0 and a.allow("hot").state == "closed"
    assert not a.states(["hot"])[0].held and a.known_routes() == []
