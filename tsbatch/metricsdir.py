"""The prometheus_client multiprocess directory of one worker, set up before Celery forks its children.

prometheus_client picks its value class once, when ``prometheus_client.values`` is first imported, from
the ``PROMETHEUS_MULTIPROC_DIR`` environment variable; every metric then writes ``<type>_<pid>.db``
files there, read by the main process's collector at scrape time. So the directory must exist, be
empty of another run's files, and be in the environment before anything imports prometheus_client
(``workers`` does): ``tsbatch worker`` calls :func:`prepare` first, and its children inherit both.

This module must not import prometheus_client (nor ``workers``): that would fix the value class too early.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from config import MetricsSettings
from config.settings import MULTIPROC_ENV


@dataclass(frozen=True, slots=True)
class MetricsDir:
    path: Path
    temporary: bool  # created here, removed when the worker stops


def prepare(settings: MetricsSettings) -> MetricsDir | None:
    """Create (or wipe) the worker's multiprocess directory and name it in the environment; ``None``
    when metrics are off (``metrics.port = 0``): children then keep plain in-memory values, no files."""
    if not settings.port:
        return None
    if settings.dir is None:
        found = MetricsDir(Path(tempfile.mkdtemp(prefix=f"tsbatch-metrics-{os.getpid()}-")), True)
    else:
        found = MetricsDir(settings.dir, False)
        found.path.mkdir(parents=True, exist_ok=True)
        wipe(found.path)
    os.environ[MULTIPROC_ENV] = str(found.path)
    return found


def wipe(path: Path) -> int:
    """Remove a previous run's metric files (only those: the directory may be shared with nothing else,
    but a mistyped setting must not delete anything of the user's); the number removed."""
    removed = 0
    for pattern in ("*.db", "*.db.tmp"):
        for f in path.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed += 1
    return removed


def cleanup(found: MetricsDir | None) -> None:
    """Remove a temporary directory when the worker stops (a configured one is wiped at the next start)."""
    if found is not None and found.temporary:
        shutil.rmtree(found.path, ignore_errors=True)
