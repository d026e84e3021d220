"""A route's token, read again from its ``token_file`` whenever the file changes.

The README promises that a rotated token is picked up without a restart. A writer used to read it once,
when its client was created: after a rotation every write was refused with 401, the breaker opened as
permanent and chunks were dead-lettered cluster-wide (issue #8). Here each write costs one ``os.stat``;
the file is read again only when its (mtime, size, inode) changed, or after the server refused the token.

A file that is missing, unreadable or empty (a rotation halfway through, a secret volume remounting) is
``TokenUnavailable``: transient, retried like a 503, never a misconfigured route.

Shared by the workers' writers and the command line (``tsbatch buckets``): both read a route's token the
same way, and neither ever prints it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from config import RouteSettings
from tsbatch import redaction
from tsbatch.errors import TokenUnavailable

Signature = tuple[int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RouteToken:
    """The current token of one route: its ``token_file``'s content, or the ``token`` setting."""

    def __init__(self, route_name: str, route: RouteSettings) -> None:
        self.route_name = route_name
        self.path: Path | None = route.token_file
        self._value = route.token.get_secret_value() if route.token is not None else ""
        self._seen: Signature | None = None  # the file's signature when it was last read
        self._loaded = False  # the file was read once: a different content from now on is a rotation
        self._changed_at = -math.inf  # monotonic time of the last change after the first read

    def current(self) -> str:
        """The token to send now; raises ``TokenUnavailable`` if the file cannot be read."""
        if self.path is None:
            return self._value
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise self._unavailable(e.strerror or str(e)) from None
        if _signature(st) != self._seen:
            self._read(self.path)
        return self._value

    def reread(self) -> str:
        """Read the file even if it looks unchanged (after a 401: a rewrite may keep size and mtime)."""
        self._seen = None
        return self.current()

    def changed_within(self, seconds: float) -> bool:
        """Whether the token changed (a rotation, not the first read) in the last ``seconds``."""
        return time.monotonic() - self._changed_at < seconds

    def _read(self, path: Path) -> None:
        # Open once, then take the signature of what was opened: a file swapped in between is read again.
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                text = f.read().decode("utf-8").strip()
        except OSError as e:
            raise self._unavailable(e.strerror or str(e)) from None
        except UnicodeDecodeError:
            raise self._unavailable("not UTF-8 text") from None
        if not text:
            raise self._unavailable("empty")  # being rewritten: the next read will find the token
        if text != self._value:
            redaction.remember(text)  # a rotated token is masked in this process's logs from now on
        if self._loaded and text != self._value:
            self._changed_at = time.monotonic()
        self._value, self._seen, self._loaded = text, _signature(st), True

    def _unavailable(self, why: str) -> TokenUnavailable:
        return TokenUnavailable(f"route {self.route_name}: token_file {self.path}: {why}")
