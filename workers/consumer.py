"""The worker's message consumer: Celery's own, except that what it refuses is kept, not only logged.

Celery acks a message it cannot decode (a content type outside ``accept_content``, e.g. pickle) and
rejects one for a task it does not know, logging each and keeping nothing. Here both also go to the
dead-letter queue with the reason, so the operator sees them in ``tsbatch dlq list`` like any other
reject. The body is kept as text, never decoded: decoding a pickle is exactly what must not happen.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from config import load_settings
from tsbatch.ledger import Ledger, open_ledger
from workers import metrics

log = logging.getLogger("tsbatch.worker")
RAW_KEEP_BYTES = 65_536


def _body_text(message: Any) -> str:
    body = message.body
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body[:RAW_KEEP_BYTES]).decode("utf-8", "backslashreplace")
    return repr(body)[:RAW_KEEP_BYTES]


class RecordingConsumer(Consumer):  # type: ignore[misc]
    _ledger: Ledger | None = None

    def _dead_letter(self, reason: str, text: str, message: Any) -> None:
        try:
            if self._ledger is None:
                settings = load_settings()
                self._ledger = open_ledger(settings)
            entry = {
                "reason": reason,
                "message": text,
                "raw": _body_text(message),
                "content_type": str(message.content_type or ""),
                "job": "",
            }
            self._ledger.dead_letter_message(entry)
            metrics.DEAD_LETTERS.labels("message", reason).inc()
        except Exception:  # the refusal itself must go on even if Redis is away
            log.exception("could not dead-letter a refused message")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter("undecodable_message", f"{type(exc).__name__}: {exc}", message)
        super().on_decode_error(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        # Where Celery 5 sends a body it refuses to deserialize (kombu's ContentDisallowed).
        self._dead_letter("undecodable_message", f"{type(exc).__name__}: {exc}", message)
        super().on_invalid_task(body, message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter("unknown_task", f"{type(exc).__name__}: {exc}", message)
        super().on_unknown_task(body, message, exc)
