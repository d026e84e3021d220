"""The task envelope both sides share: the task's name and the Celery configuration built from the
settings registry. Producers publish with it and workers consume with it; neither imports the other
(the producer must not load the worker's write stack: influxdb-client, aiohttp, ISA-L, RE2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery

from config import Settings, load_settings
from tsbatch import logs
from tsbatch.redaction import redact
from tsbatch.transport import TRANSPORT
from tsbatch.windows import iso

TASK_NAME = "tsbatch.ingest_chunk"  # every unit: a chunk or a window descriptor
TICK_TASK_NAME = "tsbatch.tick"  # the scheduler's tick, sent by ``tsbatch beat``


def celery_config(settings: Settings) -> dict[str, Any]:
    w = settings.worker
    return {
        "broker_url": settings.redis.url.get_secret_value(),
        # kombu's Redis transport, except that an ack refused by a Redis out of memory frees its slot.
        "broker_transport": TRANSPORT,
        # Results live in the ledger; a result backend would only duplicate them.
        "task_ignore_result": True,
        "result_backend": None,
        # JSON only: a pickle message from anyone who can write to Redis would be code execution.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "event_serializer": "json",
        # Ack after the work, and redeliver when a worker child dies mid-task (celery#1628, #3541).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Chunks are long tasks: a worker reserves one at a time so idle workers can take the rest.
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            # Unacked messages come back after this long (celery#5935): longer than any chunk or countdown.
            "visibility_timeout": w.visibility_timeout_s,
            "unacked_restore_interval": w.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        "task_default_queue": settings.producer.queue,
        "task_routes": {
            TASK_NAME: {"queue": settings.producer.queue},
            TICK_TASK_NAME: {"queue": settings.producer.queue},
        },
        # ``tsbatch beat``: one periodic tick. Celery's in-memory scheduler: nothing to persist (a
        # missed tick is covered by the next, which plans from the watermark), and no shelve file that
        # two beats could corrupt. A tick still queued after three periods is dropped: a newer one
        # does the same work.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "tsbatch-tick": {
                "task": TICK_TASK_NAME,
                "schedule": settings.scheduler.tick_s,
                "options": {"queue": settings.producer.queue, "expires": 3 * settings.scheduler.tick_s},
            }
        },
        # Keep consuming across Redis restarts (celery#9054, #8030): retry the broker forever.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A Redis that refuses a command (OOM under maxmemory/noeviction, BUSY) is a channel error to
        # kombu: without this the consumer calls it unrecoverable and the whole worker exits (chaos
        # scenario redis-oom: both workers gone at the first refusal, the job stranded until restarted).
        "broker_channel_error_retry": True,
        # Publishing (the producer's sends and every task retry) rides out a Redis restart of up to ~a
        # minute instead of kombu's default ~0.6 s, after which a retry would be lost with its task.
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        # Let a chunk running when the broker connection drops finish and commit: it is redelivered
        # after reconnecting (acks_late) and the ledger acks that copy as done. Cancelling it instead
        # terminated the pool child mid-write and closed its HTTP session (chaos scenario 3).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        # Refused messages (pickle, unknown tasks) are dead-lettered, not only logged (workers/consumer.py).
        "worker_consumer": "workers.consumer:RecordingConsumer",
        "broker_connection_timeout": 5,
    }


def describe_unit(message: object) -> str:
    """A unit's message in one short line: job, file and byte range or window, route, key."""
    if not isinstance(message, Mapping):
        return f"a {type(message).__name__}, not a descriptor"
    g = message.get
    key = str(g("key", ""))[:12]
    if g("unit") == "window":
        d = g("definition")
        route = (d.get("target") or d.get("source")) if isinstance(d, Mapping) else None
        where = f"window {g('job')} [{_iso(g('start'))}, {_iso(g('end'))})"
    else:
        route = g("route")
        where = f"chunk {g('path')} bytes {g('start')}-{g('end')} line {g('first_line')}"
    return redact(f"{where} job={g('job_id')} route={route} key={key}")


def _iso(t: object) -> object:
    return iso(t) if isinstance(t, int) and not isinstance(t, bool) else t


def unit_reprs(message: object, kwargs: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``send_task``/``retry`` options that make Flower and Celery's logs show a unit by
    ``describe_unit`` instead of its whole descriptor (Celery's default ``argsrepr`` is the arguments'
    repr: every mapping, column and hash of the descriptor, in every task event)."""
    return {"argsrepr": f"[{describe_unit(message)!r}]", "kwargsrepr": repr(dict(kwargs or {}))}


def send_unit(celery: Celery, message: dict[str, Any], *, queue: str) -> None:
    """Publish one unit's message (a chunk or a window descriptor) to the workers."""
    celery.send_task(TASK_NAME, args=[message], queue=queue, **unit_reprs(message))


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings``, or one that loads the settings when first configured."""
    logs.connect_celery()  # Celery installs no log handler of its own (worker, beat): tsbatch/logs.py
    celery = Celery("tsbatch", set_as_current=settings is None)
    if settings is not None:
        celery.conf.update(celery_config(settings))
    else:

        def _configure(sender: Celery, **_: Any) -> None:
            sender.conf.update(celery_config(load_settings()))

        celery.on_configure.connect(_configure, weak=False)
    return celery
