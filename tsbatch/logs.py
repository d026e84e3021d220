"""Logs: one line per record, JSON or text, for tsbatch's own loggers and Celery's, kombu's, Flower's and
influxdb-client's alike, saying which unit a line is about, with every secret masked.

    any stdlib logger (tsbatch.*, celery.*, kombu.*, influxdb_client.*, tornado.*, py.warnings)
      └── one handler on the root logger, on stderr, with structlog's ProcessorFormatter:
            UTC timestamp, level, logger name, process name
            + the context bound for the task and unit: job, unit, window, route, attempt, worker, task_id
            + the exception as plain text (no local variables)
            → redaction (tsbatch/redaction.py) → a JSON object, or a text line

Celery's own handlers are never installed: ``setup_logging`` has a receiver here, so the worker and beat
leave the root logger to this module (Celery's ``TaskFormatter`` would cover only ``celery.task``).
Prefork children inherit the handler through the fork; what differs per task comes from contextvars,
bound by ``workers/logcontext.py`` (task) and ``workers/harness.py`` (unit), read at each record.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from config import Settings
from tsbatch import redaction

# The correlation fields, in the order a text line shows them.
CONTEXT_KEYS = ("job", "unit", "window", "route", "attempt", "worker", "task_id")
HANDLER_NAME = "tsbatch"

_settings: Settings | None = None  # what this process last configured with (Celery's receiver reuses it)


def resolve_format(configured: str | None, stream: object) -> str:
    """``logging.format``, or when unset: text for a person at a terminal, JSON for anything else."""
    if configured is not None:
        return configured
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(
    settings: Settings, *, level: str | int | None = None, stream: TextIO | None = None, logfile: str = ""
) -> str:
    """Install (or replace) the root handler for ``settings``; return the format chosen."""
    global _settings
    _settings = settings
    redaction.remember_settings(settings)
    handler: logging.StreamHandler[Any]
    if logfile:
        handler = logging.FileHandler(logfile, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    fmt = resolve_format(settings.logging.format, handler.stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level or settings.logging.level)
    logging.captureWarnings(True)  # warnings.warn from any library: a record like any other
    return fmt


def formatter(fmt: str) -> structlog.stdlib.ProcessorFormatter:
    render: list[Processor] = [_text_line]
    if fmt == "json":
        render = [
            structlog.processors.EventRenamer("message"),
            _json_order,
            structlog.processors.JSONRenderer(),
        ]
    return structlog.stdlib.ProcessorFormatter(
        # Records from stdlib loggers (all of them: tsbatch logs through logging too).
        foreign_pre_chain=_pre_chain(),
        processors=[
            _add_process_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_unknown,
            # A traceback as plain text: structlog's rich tracebacks would print local variables
            # (show_locals), which may hold a token or a descriptor.
            structlog.processors.format_exc_info,
            _redact,
            *render,
        ],
    )


def _pre_chain() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        # ``log.warning(..., extra={"unit": key})`` where no context is bound (the sweeper).
        structlog.stdlib.ExtraAdder(allow=CONTEXT_KEYS),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def _add_process_name(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    if record is not None:
        event["process"] = record.processName
    return event


def _json_order(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """What a person reads first, first: time, level, logger, message, then the correlation fields."""
    first = ("timestamp", "level", "logger", "message", *CONTEXT_KEYS)
    return {**{k: event[k] for k in first if k in event}, **event}


def _drop_unknown(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Fields are shown "when known": a field bound as None (not known yet) is left out."""
    return {k: v for k, v in event.items() if v is not None}


def _redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    return {k: _redacted(v) for k, v in event.items()}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redaction.redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _text_line(_: WrappedLogger, __: str, event: EventDict) -> str:
    """Celery's own layout, ``[time: LEVEL/process] message``, which people and scripts/chaos.py read,
    then the correlation fields as ``key=value``, then the traceback."""
    head = f"[{event.get('timestamp', '')}: {str(event.get('level', '')).upper()}/{event.get('process', '')}]"
    fields = "".join(f" {k}={event[k]}" for k in CONTEXT_KEYS if k in event)
    line = f"{head} {event.get('event', '')}" + (f"  {fields.strip()}" if fields else "")
    exception = event.get("exception")
    return f"{line}\n{exception}" if exception else line


def bind(**fields: Any) -> None:
    """Bind correlation fields for every record logged from here in this context (task, coroutine)."""
    structlog.contextvars.bind_contextvars(**fields)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Correlation fields for every record logged inside the block, restored after it (with whatever
    ``bind`` set inside for the same names)."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def unbind(*names: str) -> None:
    structlog.contextvars.unbind_contextvars(*names)


def _on_celery_setup_logging(loglevel: str | int | None = None, logfile: str | None = None, **_: Any) -> None:
    """Celery's ``setup_logging`` signal (worker, beat): a receiver means Celery installs no handler."""
    from config import load_settings

    configure(_settings or load_settings(), level=loglevel or None, logfile=logfile or "")


def connect_celery() -> None:
    """Take over Celery's logging setup in this process (idempotent)."""
    from celery.signals import setup_logging

    setup_logging.connect(_on_celery_setup_logging, weak=False, dispatch_uid="tsbatch.logs")
