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

import contextlib
import json
import logging
import os
import random
import socket
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
    """Sweeps the outbox, and says the node is alive (``tsbatch status`` lists the nodes)."""

    def __init__(self, celery: Celery, settings: Settings, *, node: str, processes: int) -> None:
        super().__init__(name="tsbatch-sweeper", daemon=True)
        self.celery = celery
        self.settings = settings
        self.node = node
        self.processes = processes
        self.stopping = threading.Event()

    def run(self) -> None:
        ledger = open_ledger(self.settings)
        interval = self.settings.ledger.sweep_interval_s
        # Spread the sweepers of workers started together over the interval.
        wait = random.uniform(0, interval)
        try:
            with contextlib.suppress(redis.RedisError):  # seen at once, not a sweep interval later
                ledger.node_heartbeat(self.node, {"pid": os.getpid(), "processes": self.processes})
            while not self.stopping.wait(wait):
                wait = interval
                try:
                    ledger.node_heartbeat(self.node, {"pid": os.getpid(), "processes": self.processes})
                    sweep_once(ledger, self.celery, queue=self.settings.producer.queue)
                except redis.RedisError as e:
                    log.warning("outbox sweep skipped: %s", e)
                except Exception:  # a sweep must never stop the sweeper
                    log.exception("outbox sweep failed")
        finally:
            with contextlib.suppress(redis.RedisError):
                ledger.forget_node(self.node)  # a clean stop: not "silent" in `tsbatch status`
            ledger.redis.close()

    def stop(self) -> None:
        self.stopping.set()


_sweeper: Sweeper | None = None


def start(celery: Celery, settings: Settings, *, node: str = "", processes: int = 1) -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper(celery, settings, node=node or socket.gethostname(), processes=processes)
        _sweeper.start()


def stop(**_: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper.join(timeout=5)
        _sweeper = None
