"""The worker's Celery application. ``celery -A workers worker`` and ``tsbatch worker`` both use ``app``;
its configuration (``tsbatch.envelope``) is loaded on first use, so importing this never reads the
environment."""

from __future__ import annotations

from tsbatch.envelope import create_app

app = create_app()
