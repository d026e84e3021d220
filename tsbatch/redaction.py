"""Secrets out of everything tsbatch writes for people to read: one function, ``redact``.

Masked with ``***``:

- every secret the settings know, collected once when a process configures its logs
  (``remember_settings``): each route's ``token`` and the content of its ``token_file`` (a token read
  later, after a rotation, is added by ``tsbatch/token.py`` as it reads it), the password of
  ``redis.url``, Flower's password and its ``user:password`` credential;
- what has the shape of a credential, whoever wrote it: the value of an ``Authorization`` header, the
  user information of a URL (``redis://:pass@``, ``http://user:pass@``) and the value after
  ``token=``, ``password:``, ``cookie_secret:``, ``api_key=`` and the like.

Logs go through it (``tsbatch/logs.py``, one processor over every record, tsbatch's own and every
library's), and so does text on its way into the ledger: a server's error answer before it becomes an
error message (``workers/writer.py``), and every dead-letter message (``workers/harness.py``), which
end up in the dead-letter queue, a unit's history, a breaker's reason and task results.

A known secret shorter than ``MIN_SECRET_CHARS`` is not searched for: masking every ``a`` in every
line would hide the logs, not the secret.
"""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings

MASK = "***"
MIN_SECRET_CHARS = 4

# The user information of a URL: scheme://user:password@ or scheme://:password@ or scheme://token@.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@")
# An Authorization header's value, as HTTP, a dict's repr or JSON write it: the scheme and credential.
_AUTHORIZATION = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b['\"]?\s*[:=]\s*['\"]?)(?:[a-z]+[ \t]+)?[^\s'\",;}\]]+"
)
# ``token=...``, ``"password": "..."``, ``'cookie_secret': '...'`` (Flower's debug log): a name that
# ends in a word for a secret, then its value. ``token_file`` and ``tokens`` are not such names, nor is
# a file name (``/run/secrets/hot.token: No such file or directory``).
_KEY_VALUE = re.compile(
    r"(?i)((?<![\w./\\-])[\w-]*?(?:token|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|secret[_-]?key)\b"
    r"['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&}\]]+"
)


class Redactor:
    """Masks known secrets and credential-shaped text; ``remember`` may be called from any thread."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._known: re.Pattern[str] | None = None
        self.remember(*secrets)

    def remember(self, *secrets: str) -> None:
        found = {s for s in secrets if len(s) >= MIN_SECRET_CHARS} - self._secrets
        if not found:
            return
        with self._lock:
            self._secrets |= found
            # Longest first, so that a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._known = re.compile("|".join(re.escape(s) for s in ordered))

    def __call__(self, text: str) -> str:
        known = self._known
        if known is not None:
            text = known.sub(MASK, text)
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
        text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
        return _KEY_VALUE.sub(rf"\1{MASK}", text)


_redactor = Redactor()


def redact(text: str) -> str:
    """``text`` with every secret this process knows, and anything shaped like one, masked."""
    return _redactor(text)


def remember(*secrets: str) -> None:
    """Mask these from now on in this process (and the processes it forks later)."""
    _redactor.remember(*secrets)


def secrets_of(settings: Settings) -> list[str]:
    """The secret values the settings hold or point at, read now."""
    found: list[str] = []
    for route in settings.routes.values():
        if route.token is not None:
            found.append(route.token.get_secret_value())
        if route.token_file is not None:
            # Unreadable now: the writer reports it, and remembers the token once it reads one.
            with contextlib.suppress(OSError, UnicodeDecodeError):
                found.append(route.token_file.read_text(encoding="utf-8").strip())
    found += _url_password(settings.redis.url.get_secret_value())
    if settings.flower.password is not None:
        password = settings.flower.password.get_secret_value()
        found += [password, f"{settings.flower.user}:{password}"]
    return found


def _url_password(url: str) -> list[str]:
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return [password, urllib.parse.unquote(password)] if password else []


def remember_settings(settings: Settings) -> None:
    remember(*secrets_of(settings))
