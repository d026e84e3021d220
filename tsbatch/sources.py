"""Confinement of descriptor paths to the configured source roots.

Both sides check: the producer before planning, the worker before it reads anything, because a
descriptor may come from anywhere that can write to the queue.

A file is opened once and everything after works on that descriptor: checking a name and opening it
again later lets a directory swapped for a symlink in between lead outside the roots (issue #8).
``open_source`` walks from the root one component at a time without following any symlink (a link
below a root is refused, wherever it points, so nothing outside a root is ever opened), opens the
file non-blocking (a FIFO would otherwise block the worker's event loop and its lease heartbeat),
refuses anything but a regular file, and checks the opened file's real path against the roots once
more. Linux only: the real path is read from ``/proc/self/fd``.

URLs (``s3://``, ``gcs://``, ``file://``: Parquet restores) are confined the same way by
``check_url``: a URL must start with one of ``sources.url_roots``, compared as text after refusing
what could make the text and the object differ (``.`` and ``..`` segments, empty segments) or carry a
secret (credentials before ``@``, a query string such as a presigned signature).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tsbatch.errors import SourceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
# O_NOCTTY: a terminal device is refused below, but must not become our controlling terminal first.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Source:
    """A source file opened once: read through ``fd``, never by name again."""

    fd: int
    path: Path  # the real path of the opened file, under one of the roots
    size: int
    mtime_ns: int

    def read_range(self, start: int, end: int, *, sha256: str, first_line: int) -> bytes:
        """Bytes ``start``-``end`` of the file, refused unless length and SHA-256 are as planned."""
        data = os.pread(self.fd, end - start, start)
        if len(data) != end - start or hashlib.sha256(data).hexdigest() != sha256:
            raise SourceError(
                f"{self.path}:{first_line}: bytes {start}-{end} changed since planning",
                reason="source_changed",
            )
        return data


@contextmanager
def open_source(path: str | Path, roots: Sequence[Path]) -> Iterator[Source]:
    """Open ``path`` if it is a regular file beneath one of ``roots`` (no symlink followed below the
    root); else ``SourceError``. The descriptor is closed on leaving the block."""
    root, parts = _beneath(path, roots)
    fd = _open_beneath(path, root, parts)
    try:
        yield _checked(path, fd, roots)
    finally:
        os.close(fd)


def _beneath(path: str | Path, roots: Sequence[Path]) -> tuple[Path, tuple[str, ...]]:
    """The root ``path`` names (as configured, or resolved) and the components below it.

    ``..`` is resolved by name: sound here because no component below the root may be a symlink.
    """
    if not roots:
        raise SourceError("sources.roots is empty: no file may be read", reason="no_source_roots")
    if not Path(path).is_absolute():
        raise SourceError(f"{path}: path must be absolute", reason="relative_path")
    candidate = Path(os.path.normpath(path))
    for root in roots:
        for base in dict.fromkeys([Path(os.path.normpath(root)), root.resolve()]):
            if candidate == base:
                raise SourceError(f"{path}: not a regular file", reason="not_a_file")
            if candidate.is_relative_to(base):
                return base, candidate.relative_to(base).parts
    raise SourceError(f"{path}: outside the source roots ({_shown(roots)})", reason="outside_roots")


def _open_beneath(path: str | Path, root: Path, parts: tuple[str, ...]) -> int:
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself may be a link
    except OSError as e:
        raise _refusal(path, e, f"source root {root}") from None
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                if e.errno == errno.ENOTDIR and _is_link(part, dir_fd):
                    e = OSError(errno.ELOOP, "")
                raise _refusal(path, e, str(root.joinpath(*parts[: i + 1]))) from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            return os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise _refusal(path, e, "") from None
    finally:
        os.close(dir_fd)


def _checked(path: str | Path, fd: int, roots: Sequence[Path]) -> Source:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{path}: not a regular file", reason="not_a_file")
    if st.st_nlink == 0:
        raise SourceError(f"{path}: no such file (deleted)", reason="not_found")
    real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise SourceError(f"{path}: outside the source roots ({_shown(roots)})", reason="outside_roots")
    return Source(fd=fd, path=real, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _refusal(path: str | Path, e: OSError, where: str) -> SourceError:
    """``where``: the directory that could not be opened, or "" for the file itself."""
    if e.errno == errno.ENOENT:
        return SourceError(f"{path}: no such file", reason="not_found")
    if e.errno == errno.ELOOP:
        what = f"{where} is" if where else "is"
        return SourceError(f"{path}: {what} a symbolic link (not followed)", reason="symlink")
    if e.errno == errno.ENOTDIR:
        return SourceError(f"{path}: {where} is not a directory", reason="not_found")
    return SourceError(f"{path}: cannot open: {e.strerror}", reason="unreadable")


def _shown(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names an object through a URL scheme (``s3://b/k``) rather than a path."""
    return "://" in str(location)


def shown_url(url: str) -> str:
    """``url`` for messages and logs: credentials (before an ``@`` in its authority) and any query string
    (a presigned URL's signature) hidden."""
    url, query, _ = url.partition("?")
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}" + ("?***" if query else "")


def check_url(url: str, url_roots: Sequence[str], *, prefix: bool = False) -> str:
    """``url`` if it lies under one of ``url_roots`` (``sources.url_roots``); else ``SourceError``.
    With ``prefix`` (a "directory" to list), it may end with ``/`` and be a root itself.

    A root matches at a ``/`` boundary: ``s3://b/archive`` admits ``s3://b/archive/x.parquet``, not
    ``s3://b/archive-old/x.parquet``. Credentials and query strings are refused, not stripped: they
    would otherwise travel in every descriptor (Redis) and log line; give them through the store's
    own environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``)."""
    shown = shown_url(url)
    if not url_roots:
        raise SourceError(
            f"{shown}: sources.url_roots is empty: no URL may be read (add a prefix such as "
            "'s3://bucket/archive/' to the settings)",
            reason="no_source_roots",
        )
    parts = urlsplit(url)
    if (
        not parts.scheme
        or not (parts.netloc or parts.scheme == "file")
        or (parts.scheme == "file" and parts.netloc)
    ):
        raise SourceError(
            f"{shown}: not a URL of the form scheme://bucket/key or file:///path", reason="bad_url"
        )
    if "@" in parts.netloc:
        raise SourceError(
            f"{shown}: credentials in a URL are refused (they would be stored with every chunk): give "
            "them through the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)",
            reason="bad_url",
        )
    if "?" in url or "#" in url or not url.isprintable() or " " in url:
        raise SourceError(
            f"{shown}: a URL with a query string, a fragment, spaces or control characters is refused",
            reason="bad_url",
        )
    segments = parts.path.split("/")[1:]
    if prefix and len(segments) > 1 and segments[-1] == "":
        segments.pop()
    if any(seg in ("", ".", "..") for seg in segments) and not (prefix and segments == [""]):
        raise SourceError(f"{shown}: empty, '.' or '..' path segments are refused", reason="bad_url")
    for root in url_roots:
        base = root if root.endswith("/") else root + "/"
        if url.startswith(base) or (prefix and url.rstrip("/") == base.rstrip("/")):
            return url
    raise SourceError(
        f"{shown}: not under sources.url_roots ({', '.join(map(shown_url, url_roots))})",
        reason="outside_roots",
    )
