"""Workers: the Celery app and the chunk task. ``celery -A workers worker`` finds ``app`` here."""

from tsbatch.envelope import TASK_NAME, create_app
from workers.celeryapp import app
from workers.tasks import ingest_chunk

__all__ = ["TASK_NAME", "app", "create_app", "ingest_chunk"]
