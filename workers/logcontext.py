"""The task a log line was written in: its id and the worker process, bound for every record logged
while the task runs (tsbatch/logs.py adds them to each line; the harness adds the unit's own fields).

Celery's signals run in the pool child, on the task's thread, just before and after the task body, so
the fields also reach the coroutines the task runs on the process's loop and the threads they start
(``asyncio`` and ``to_thread`` copy the context), and Celery's own "succeeded" line.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun

from tsbatch import logs
from workers.runtime import get_runtime


def _bind_task(task_id: str | None = None, **_: Any) -> None:
    logs.bind(task_id=task_id, worker=get_runtime().worker_id)


def _unbind_task(**_: Any) -> None:
    logs.unbind("task_id", "worker")


task_prerun.connect(_bind_task, weak=False, dispatch_uid="tsbatch.logcontext.bind")
task_postrun.connect(_unbind_task, weak=False, dispatch_uid="tsbatch.logcontext.unbind")
