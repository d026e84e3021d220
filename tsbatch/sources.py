"""Confinement of descriptor paths to the configured source roots.

Both sides check: the producer before planning, the worker before it opens anything, because a
descriptor may come from anywhere that can write to the queue. Symlinks are resolved first, so a link
inside a root that points outside it is refused like ``../../etc/passwd``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tsbatch.errors import SourceError


def confine(path: str | Path, roots: Sequence[Path]) -> Path:
    """The resolved ``path`` if it is a regular file under one of ``roots``; else ``SourceError``."""
    if not roots:
        raise SourceError("sources.roots is empty: no file may be read", reason="no_source_roots")
    candidate = Path(path)
    if not candidate.is_absolute():
        raise SourceError(f"{path}: path must be absolute", reason="relative_path")
    resolved = candidate.resolve(strict=False)
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise SourceError(f"{path}: outside the source roots ({shown})", reason="outside_roots")
    if not resolved.exists():
        raise SourceError(f"{path}: no such file", reason="not_found")
    if not resolved.is_file():
        raise SourceError(f"{path}: not a regular file", reason="not_a_file")
    return resolved
