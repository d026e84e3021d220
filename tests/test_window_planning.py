"""Planning windows through the ledger, on a real redis-server: idempotent under concurrent ticks, a
watermark that never skips, a bounded backlog per tick, a changed definition re-planned."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from config.settings import JobSettings
from producers.schedule import Windows, scheduled_job_id
from tsbatch.ledger import Ledger, connect

EVERY = 300
FIRST = 1_767_225_600  # 2026-01-01T00:00:00Z


def _ledger(url: str) -> Ledger:
    return Ledger(connect(url), prefix=f"t-{uuid.uuid4().hex[:8]}")


def _job(**kw: Any) -> JobSettings:
    spec = {
        "kind": "downsample",
        "source": "hot",
        "target": "warm",
        "measurement": "cpu",
        "every": EVERY,
        "aggregates": ["mean"],
        "start": "2026-01-01T00:00:00Z",
        **kw,
    }
    return JobSettings.model_validate(spec)


def _commit(book: Ledger, key: str) -> None:
    claim = book.claim(key, worker="t", lease_ttl_s=30, max_attempts=5, descriptor="{}")
    assert claim.status == "claimed"
    record = {"points": 1, "bytes": 1, "sha256": "x", "rejected": 0}
    assert book.commit(
        key,
        claim.holder,
        record=record,
        rejected=[],
        dlq_common={"job": "", "key": key, "path": "", "route": "warm"},
    )


def test_concurrent_ticks_plan_and_publish_each_window_once(redis_server: str) -> None:
    book, sent, lock = _ledger(redis_server), [], threading.Lock()

    def publish(message: dict[str, Any]) -> None:
        with lock:
            sent.append(message["key"])

    def tick() -> None:
        Windows(book, "cpu", _job()).tick(FIRST + 36 * EVERY + 5, max_windows=100, publish=publish)

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sent) == len(set(sent)) == 36  # every due window, each published once
    status = book.job(scheduled_job_id("cpu"))
    assert status.units == 36


def test_the_watermark_stops_at_the_first_window_not_committed(redis_server: str) -> None:
    book = _ledger(redis_server)
    sent: list[dict[str, Any]] = []
    w = Windows(book, "cpu", _job())
    w.tick(FIRST + 4 * EVERY, max_windows=100, publish=sent.append)
    keys = [m["key"] for m in sent]
    for key in (keys[0], keys[1], keys[3]):
        _commit(book, key)
    report = w.tick(FIRST + 4 * EVERY, max_windows=100, publish=sent.append)
    assert report["watermark"] == FIRST + 2 * EVERY  # window 2 holds it; window 3 is not skipped over
    _commit(book, keys[2])
    assert w.tick(FIRST + 4 * EVERY, max_windows=100, publish=sent.append)["watermark"] == FIRST + 4 * EVERY


def test_a_backlog_is_planned_oldest_first_a_bounded_number_per_tick(redis_server: str) -> None:
    book = _ledger(redis_server)
    sent: list[dict[str, Any]] = []
    w = Windows(book, "cpu", _job(offset="1m"))
    now = FIRST + 25 * EVERY + 59  # window 24 ended 59 s ago: with a 1 m offset it is not due yet
    reports = [w.tick(now, max_windows=10, publish=sent.append) for _ in range(4)]
    assert [r["planned"] for r in reports] == [10, 10, 4, 0]
    assert [m["start"] for m in sent] == [FIRST + k * EVERY for k in range(24)]


def test_a_changed_definition_plans_the_windows_after_the_watermark_again(redis_server: str) -> None:
    book = _ledger(redis_server)
    sent: list[dict[str, Any]] = []
    Windows(book, "cpu", _job()).tick(FIRST + 3 * EVERY, max_windows=100, publish=sent.append)
    _commit(book, sent[0]["key"])
    sent.clear()
    changed = Windows(book, "cpu", _job(aggregates=["mean", "max"]))
    changed.tick(FIRST + 3 * EVERY, max_windows=100, publish=sent.append)
    assert [m["start"] for m in sent] == [FIRST + EVERY, FIRST + 2 * EVERY]
    assert all(m["definition"]["aggregates"] == ["mean", "max"] for m in sent)
    for m in sent:
        _commit(book, m["key"])
    assert (
        changed.tick(FIRST + 3 * EVERY, max_windows=100, publish=sent.append)["watermark"]
        == FIRST + 3 * EVERY
    )
    assert json.loads(json.dumps(changed.marks()))["planned_to"] == FIRST + 3 * EVERY


def test_a_repair_interrupted_between_its_generation_and_its_plan_is_planned_by_the_next_verify(
    redis_server: str,
) -> None:
    import asyncio

    from producers.schedule import verify

    book = _ledger(redis_server)
    sent: list[dict[str, Any]] = []
    w = Windows(book, "cpu", _job())
    w.tick(FIRST + 2 * EVERY, max_windows=100, publish=sent.append)
    for m in sent:
        _commit(book, m["key"])
    # A verifier moved window 1 to generation 1 and died before planning it.
    assert book.next_generation("cpu", FIRST + EVERY, 0) == 1
    assert [r.state for r in w.rows(FIRST, FIRST + 2 * EVERY)] == ["committed", "unplanned"]
    sent.clear()

    async def same_as_committed(start: int, end: int) -> str:
        return next(iter(w.rows(start, end))).record.get("fingerprint", "")

    checked, repairs = asyncio.run(
        verify(w, FIRST, FIRST + 2 * EVERY, fingerprint=same_as_committed, job_id="j2", publish=sent.append)
    )
    assert checked == 1 and [r.start for r in repairs] == [FIRST + EVERY]
    assert [(m["start"], m["generation"]) for m in sent] == [(FIRST + EVERY, 1)]
    assert [r.state for r in w.rows(FIRST, FIRST + 2 * EVERY)] == ["committed", "planned"]
