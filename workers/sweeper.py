"""The outbox sweeper: publishes again every unit whose message is overdue.

Every unit is in the ledger's outbox until it is done (tsbatch/ledger.py). A message can be lost in
several ways that no retry sees: a producer interrupted between recording a unit and publishing it, a
node that dies holding unacked messages and Celery retries with countdowns (Redis would give them back
only after the visibility timeout, an hour by default), a lost Redis reply. Each worker's main process
sweeps every ``ledger.sweep_interval_s``; ``sweep.lua`` decides what is overdue and reschedules it in
the same step, so several sweepers do not publish a unit twice in a row. Publishing twice is harmless
anyway: the second copy meets the claim and is acked.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from typing import Any

import redis
from celery import Celery

from config import Settings
from tsbatch.envelope import send_unit
from tsbatch.ledger import Ledger, open_ledger

log = logging.getLogger("tsbatch.sweeper")


def sweep_once(ledger: Ledger, celery: Celery, *, queue: str) -> int:
    """Publish the overdue units once; return how many."""
    overdue = ledger.sweep(queue=queue)
    for key, descriptor in overdue:
        send_unit(celery, json.loads(descriptor), queue=queue)
        log.warning(
            "re-published overdue unit key=%s (its message was lost or its holder died)",
            key[:12],
            extra={"unit": key},
        )
    return len(overdue)


class Sweeper(threading.Thread):
    def __init__(self, celery: Celery, settings: Settings) -> None:
        super().__init__(name="tsbatch-sweeper", daemon=True)
        self.celery = celery
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        ledger = open_ledger(self.settings)
        interval = self.settings.ledger.sweep_interval_s
        # Spread the sweepers of workers started together over the interval.
        wait = random.uniform(0, interval)
        try:
            while not self.stopping.wait(wait):
                wait = interval
                try:
                    sweep_once(ledger, self.celery, queue=self.settings.producer.queue)
                except redis.RedisError as e:
                    log.warning("outbox sweep skipped: %s", e)
                except Exception:  # a sweep must never stop the sweeper
                    log.exception("outbox sweep failed")
        finally:
            ledger.redis.close()

    def stop(self) -> None:
        self.stopping.set()


_sweeper: Sweeper | None = None


def start(celery: Celery, settings: Settings) -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper(celery, settings)
        _sweeper.start()


def stop(**_: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper.join(timeout=5)
        _sweeper = None
