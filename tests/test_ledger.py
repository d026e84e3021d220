"""The ledger's own guarantees, each script against a real redis-server: the outbox, job accounting that
cannot drift, the durable attempt count, fenced dead letters, and the bounds that keep Redis finite."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest

from config.constants import LEASE_GRACE_S
from tsbatch.ledger import Ledger, RejectedLine, connect

QUEUE = "q"
DESC = '{"key": "k"}'


def _ledger(url: str, **kwargs: float) -> Ledger:
    return Ledger(connect(url), prefix=f"t-{uuid.uuid4().hex[:8]}", **kwargs)  # type: ignore[arg-type]


def _desc(key: str) -> str:
    return json.dumps({"key": key, "path": f"/data/{key}.lp"})


def _claim(book: Ledger, key: str, *, worker: str = "w:1", ttl: float = 5, max_attempts: int = 5) -> str:
    claim = book.claim(key, worker=worker, lease_ttl_s=ttl, max_attempts=max_attempts, descriptor=_desc(key))
    assert claim.status == "claimed", claim
    return claim.holder


def _commit(book: Ledger, key: str, holder: str, points: int = 10) -> bool:
    record: dict[str, str | int | float] = {"points": points, "bytes": 100, "rejected": 0}
    return book.commit(key, holder, record=record, rejected=[], dlq_common=_common(key))


def _common(key: str) -> dict[str, str]:
    return {"job": "j", "key": key, "path": "/p", "route": "r"}


def _plan(book: Ledger, job: str, keys: list[str], **kwargs: bool) -> list[str]:
    book.create_job(job, route="r", paths=["/p"])
    states = [book.plan(k, job, descriptor=_desc(k), **kwargs) for k in keys]
    book.finish_planning(job)
    return states


def test_a_unit_is_recorded_with_its_descriptor_before_it_is_published(redis_server: str) -> None:
    book = _ledger(redis_server)

    assert _plan(book, "j1", ["a"]) == ["new"]

    unit = book.unit("a")
    assert unit["state"] == "planned" and json.loads(unit["desc"])["key"] == "a"
    assert book.redis.zscore(book.outbox_key, "a") is not None  # the sweeper knows it too
    job = book.job("j1")
    assert (job.units, job.pending, job.done) == (1, 1, False)


def test_a_rerun_publishes_what_is_not_done_skips_what_is_and_reports_what_died(redis_server: str) -> None:
    book = _ledger(redis_server)
    _plan(book, "first", ["done", "stranded", "dead"])
    _commit(book, "done", _claim(book, "done"))
    holder = _claim(book, "dead")
    assert book.dead_letter("dead", holder, entry={"reason": "route_rejected"})

    states = _plan(book, "rerun", ["done", "stranded", "dead"])

    assert states == ["committed", "planned", "dead"]
    rerun = book.job("rerun")
    assert (rerun.units, rerun.skipped, rerun.dead_before, rerun.pending) == (1, 1, 1, 1)
    assert rerun.failed  # a dead-lettered unit is never reported as done


def test_a_unit_planned_by_two_jobs_completes_both_once(redis_server: str) -> None:
    book = _ledger(redis_server)
    _plan(book, "a", ["k1", "k2"])
    _plan(book, "b", ["k2"])
    _plan(book, "b", ["k2"])  # the same job planning it again counts it once

    _commit(book, "k1", _claim(book, "k1"))
    _commit(book, "k2", _claim(book, "k2"))

    a, b = book.job("a"), book.job("b")
    assert (a.units, a.committed, a.points, a.done) == (2, 2, 20, True)
    assert (b.units, b.committed, b.points, b.done) == (1, 1, 10, True)


def test_retry_dead_puts_a_dead_unit_back_in_play_under_the_new_job_only(redis_server: str) -> None:
    book = _ledger(redis_server)
    _plan(book, "first", ["k"])
    book.dead_letter("k", _claim(book, "k"), entry={"reason": "route_rejected"})

    assert _plan(book, "retry", ["k"], retry_dead=True) == ["new"]
    _commit(book, "k", _claim(book, "k"))

    first, retry = book.job("first"), book.job("retry")
    assert (first.dead, first.committed) == (1, 0)
    assert (retry.units, retry.committed, retry.retried_dead, retry.done) == (1, 1, 1, True)
    assert book.unit("k")["attempts"] == "1"  # a fresh start: the old attempts do not count


def test_a_unit_claimed_more_than_max_attempts_times_is_poison(redis_server: str) -> None:
    book = _ledger(redis_server)
    _plan(book, "j", ["k"])
    for _ in range(3):  # each holder dies: its lease lapses
        _claim(book, "k", ttl=0.05, max_attempts=3)
        time.sleep(0.1)

    claim = book.claim("k", worker="w:9", lease_ttl_s=5, max_attempts=3, descriptor=_desc("k"))

    assert (claim.status, claim.attempts) == ("poison", 4)
    assert [h.split(" ", 1)[1] for h in book.history("k")] == [
        "claim 2 by w:1",
        "claim 3 by w:1",
        "claim 4 by w:9",
    ]  # who had it: a killed claim records nothing else
    assert book.dead_letter("k", claim.holder, entry={"reason": "poison"})
    assert book.job("j").dead == 1 and book.job("j").done


def test_a_deferral_that_is_not_the_units_fault_gives_its_attempt_back(redis_server: str) -> None:
    book = _ledger(redis_server)
    _plan(book, "j", ["k"])
    holder = _claim(book, "k")
    assert book.release("k", holder, due_in_s=1)
    holder = _claim(book, "k")
    assert book.release("k", holder, due_in_s=1, failure="503 unavailable")

    unit = book.unit("k")
    assert (unit["attempts"], unit["failures"]) == ("1", "1")
    assert book.history("k")[0].endswith("503 unavailable")


def test_a_dead_letter_without_the_lease_is_refused_and_the_unit_stays_in_the_outbox(
    redis_server: str,
) -> None:
    book = _ledger(redis_server)
    _plan(book, "j", ["k"])
    stale = _claim(book, "k", ttl=0.05)
    time.sleep(0.1)
    _claim(book, "k", worker="w:2")

    assert not book.dead_letter("k", stale, entry={"reason": "route_rejected"})

    assert book.unit("k")["state"] == "planned"
    assert book.redis.zscore(book.outbox_key, "k") is not None
    assert book.stats()["dead_fenced"] == 1
    assert book.job("j").dead == 0


def test_the_sweeper_republishes_a_unit_whose_holder_died_and_only_once_a_sweep(redis_server: str) -> None:
    book = _ledger(redis_server, republish_after_s=0.05)
    _plan(book, "j", ["held", "lost"])
    _claim(book, "held", ttl=0.1)  # its holder dies: the lease lapses
    time.sleep(0.1 + LEASE_GRACE_S + 0.1)

    first = dict(book.sweep(queue=QUEUE))
    second = dict(book.sweep(queue=QUEUE))

    assert set(first) == {"held", "lost"}  # the queue is empty, so "lost"'s message is gone
    assert json.loads(first["held"])["key"] == "held"
    assert second == {}  # rescheduled: concurrent sweepers do not publish it twice in a row


def test_the_sweeper_leaves_alone_units_that_still_wait_in_a_queue_and_live_leases(redis_server: str) -> None:
    book = _ledger(redis_server, republish_after_s=0.05)
    _plan(book, "j", ["waiting", "running"])
    _claim(book, "running", ttl=30)
    book.redis.rpush(QUEUE, "a message")  # messages still queued, none planned after "waiting" claimed
    time.sleep(0.1)
    try:
        assert book.sweep(queue=QUEUE) == []
        book.redis.zadd(book.outbox_key, {"running": 0})
        assert book.sweep(queue=QUEUE) == []  # a live lease: looked at again when it could lapse
    finally:
        book.redis.delete(QUEUE)


def test_a_never_claimed_unit_overtaken_by_later_ones_is_republished_even_with_a_queue(
    redis_server: str,
) -> None:
    book = _ledger(redis_server, republish_after_s=0.05)
    _plan(book, "j", ["lost"])
    time.sleep(0.1)
    _plan(book, "j2", ["later"])
    _claim(book, "later")  # consumed in publishing order: "lost" should have been claimed before it
    book.redis.rpush(QUEUE, "a message")
    try:
        assert [k for k, _ in book.sweep(queue=QUEUE)] == ["lost"]
    finally:
        book.redis.delete(QUEUE)


def test_done_records_expire_and_leave_the_outbox(redis_server: str) -> None:
    book = _ledger(redis_server, retention_s=3600)
    _plan(book, "j", ["c", "d"])
    _commit(book, "c", _claim(book, "c"))
    book.dead_letter("d", _claim(book, "d"), entry={"reason": "x"})

    for key in ("c", "d"):
        assert 3590 < book.redis.ttl(book.unit_key(key)) <= 3600
        assert not book.redis.exists(book.lease_key(key), book.unit_jobs_key(key))
    assert "desc" not in book.unit("c")  # the descriptor is dropped at commit
    assert book.redis.zcard(book.outbox_key) == 0


def test_rejected_lines_keep_a_few_kib_with_length_and_sha256_and_the_dlq_is_capped(
    redis_server: str,
) -> None:
    book = _ledger(redis_server, dlq_maxlen=100, raw_keep_bytes=64)
    _plan(book, "j", ["k"])
    long_line = "é" * 1000  # 2,000 bytes of UTF-8
    rejected = [RejectedLine(n, "bad", long_line) for n in range(1, 1001)]
    record: dict[str, str | int | float] = {"points": 0, "bytes": 0, "rejected": 1000}

    assert book.commit("k", _claim(book, "k"), record=record, rejected=rejected, dlq_common=_common("k"))

    entries = list(book.dead_letters())
    assert 100 <= len(entries) < 1000
    assert book.stats()["dlq_trimmed"] == 1000 - book.redis.xlen(book.dlq_key)
    last = entries[-1]
    assert last.get("line") == "1000" and last.get("raw") == "é" * 32  # cut on a character boundary
    assert last.get("length") == "2000"
    assert last.get("sha256") == hashlib.sha256(long_line.encode()).hexdigest()


def test_planning_interrupted_says_where_and_a_silent_producer_is_noticed(redis_server: str) -> None:
    book = _ledger(redis_server)
    book.create_job("ctrl-c", route="r", paths=["/p"])
    book.planning("ctrl-c", "/data/a.lp")
    book.finish_planning("ctrl-c", interrupted="KeyboardInterrupt")
    book.create_job("killed", route="r", paths=["/p"])
    book.planning("killed", "/data/b.lp")

    now = int(time.time() * 1000)
    ctrl_c = book.job("ctrl-c").planning_problem(now_ms_=now, stale_ms=30_000)
    killed_later = book.job("killed").planning_problem(now_ms_=now + 60_000, stale_ms=30_000)

    assert ctrl_c == "planning interrupted at file /data/a.lp (KeyboardInterrupt): run the command again"
    assert "planning interrupted at file /data/b.lp (producer silent)" in killed_later
    assert book.job("killed").planning_problem(now_ms_=now, stale_ms=30_000) == ""


def _swept_late(ledger: Ledger) -> list[str]:
    # republish_after_s far above the test's length: only the lease may decide when the unit comes back.
    return [key for key, _ in ledger.sweep(queue="no-such-queue")]


@pytest.mark.timeout(30)
def test_a_unit_whose_holder_died_is_swept_right_after_its_lease_lapses(redis_server: str) -> None:
    ledger = _ledger(redis_server, republish_after_s=600)
    ledger.create_job("j", route="default", paths=[])
    ledger.plan("k", "j", descriptor=DESC)
    claim = ledger.claim("k", worker="h:1", lease_ttl_s=0.5, max_attempts=5, descriptor=DESC)
    assert claim.status == "claimed"
    assert _swept_late(ledger) == []  # the holder may still be working
    time.sleep(0.5 + LEASE_GRACE_S + 0.3)
    assert _swept_late(ledger) == ["k"]


@pytest.mark.timeout(30)
def test_a_lease_found_alive_by_a_sweep_is_looked_at_again_when_it_lapses(redis_server: str) -> None:
    ledger = _ledger(redis_server, republish_after_s=600)
    ledger.create_job("j", route="default", paths=[])
    ledger.plan("k", "j", descriptor=DESC)
    claim = ledger.claim("k", worker="h:1", lease_ttl_s=0.3, max_attempts=5, descriptor=DESC)
    assert ledger.renew("k", claim.holder, lease_ttl_s=2.0)  # a heartbeat: the holder is alive
    time.sleep(0.3 + LEASE_GRACE_S + 0.2)
    assert _swept_late(ledger) == []  # due, but the lease is alive: look again once it lapses
    time.sleep(2.0 + LEASE_GRACE_S)  # the holder died after that heartbeat
    assert _swept_late(ledger) == ["k"]
