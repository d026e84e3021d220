"""Workers: the Celery app and the chunk task. ``celery -A workers worker`` finds ``app`` here."""

from workers.celeryapp import TASK_NAME, app, create_app
from workers.tasks import ingest_chunk

__all__ = ["TASK_NAME", "app", "create_app", "ingest_chunk"]
