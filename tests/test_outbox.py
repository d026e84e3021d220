"""The outbox sweeper takes a unit whose holder died back as soon as its lease lapses (issue #8)."""

from __future__ import annotations

import time
import uuid

import pytest

from config.constants import LEASE_GRACE_S
from tsbatch.ledger import Ledger, connect

DESC = '{"key": "k"}'


def _ledger(url: str) -> Ledger:
    # republish_after_s far above the test's length: only the lease may decide when the unit comes back.
    return Ledger(connect(url), prefix=f"t-{uuid.uuid4().hex[:8]}", republish_after_s=600)


def _swept(ledger: Ledger) -> list[str]:
    return [key for key, _ in ledger.sweep(queue="no-such-queue")]


@pytest.mark.timeout(30)
def test_a_unit_whose_holder_died_is_swept_right_after_its_lease_lapses(redis_server: str) -> None:
    ledger = _ledger(redis_server)
    ledger.create_job("j", route="default", paths=[])
    ledger.plan("k", "j", descriptor=DESC)
    claim = ledger.claim("k", worker="h:1", lease_ttl_s=0.5, max_attempts=5, descriptor=DESC)
    assert claim.status == "claimed"
    assert _swept(ledger) == []  # the holder may still be working
    time.sleep(0.5 + LEASE_GRACE_S + 0.3)
    assert _swept(ledger) == ["k"]


@pytest.mark.timeout(30)
def test_a_lease_found_alive_by_a_sweep_is_looked_at_again_when_it_lapses(redis_server: str) -> None:
    ledger = _ledger(redis_server)
    ledger.create_job("j", route="default", paths=[])
    ledger.plan("k", "j", descriptor=DESC)
    claim = ledger.claim("k", worker="h:1", lease_ttl_s=0.3, max_attempts=5, descriptor=DESC)
    assert ledger.renew("k", claim.holder, lease_ttl_s=2.0)  # a heartbeat: the holder is alive
    time.sleep(0.3 + LEASE_GRACE_S + 0.2)
    assert _swept(ledger) == []  # due, but the lease is alive: look again once it lapses
    time.sleep(2.0 + LEASE_GRACE_S)  # the holder died after that heartbeat
    assert _swept(ledger) == ["k"]
