"""Find the n-th newline in a buffer without splitting it into lines.

The producer cuts files into chunks and the worker cuts chunks into batches this way: ``bytes.count``
runs at memory speed, so a window is counted, halved while it still holds the newline, and only the
last few dozen bytes are searched one newline at a time; with a good guess of where the newline is,
only the guess is counted. Nothing is copied.
"""

from __future__ import annotations

_LINEAR_BYTES = 256  # below this window size, bytes.find per newline beats another halving
_WALK_LIMIT = 64  # a guess this many newlines off is corrected one newline at a time


def nth_newline(buf: bytes | bytearray, start: int, n: int, *, hint: int = 0) -> int:
    """Index of the ``n``-th ``\\n`` in ``buf[start:]`` (``n`` >= 1), or ``len(buf)`` if it has fewer.

    ``hint`` is a guess of how many bytes ``n`` lines take. The newlines up to the guess are counted
    and, when the guess was close, the few missing or extra ones found one by one: each byte is counted
    once. Otherwise (or without a hint) the window is halved while it holds the newline.
    """
    if hint > 0:
        guess = min(len(buf), start + hint)
        extra = buf.count(b"\n", start, guess) - n
        if 0 <= extra < _WALK_LIMIT:
            i = guess
            for _ in range(extra + 1):
                i = buf.rfind(b"\n", start, i)
            return i
        if -_WALK_LIMIT < extra < 0:
            i = guess - 1
            for _ in range(-extra):
                i = buf.find(b"\n", i + 1)
                if i < 0:
                    return len(buf)
            return i
    return _bisect(buf, start, n, width=hint if hint > 0 else len(buf) - start)


def _bisect(buf: bytes | bytearray, start: int, n: int, *, width: int) -> int:
    size = len(buf)
    lo, hi, need = start, min(size, start + width), n
    while True:
        found = buf.count(b"\n", lo, hi)
        if found >= need:
            break
        if hi >= size:
            return size
        need -= found
        width *= 2
        lo, hi = hi, min(size, hi + width)
    # [lo, hi) holds at least `need` newlines: halve it while keeping the `need`-th one inside.
    while hi - lo > _LINEAR_BYTES:
        mid = (lo + hi) // 2
        found = buf.count(b"\n", lo, mid)
        if found >= need:
            hi = mid
        else:
            need -= found
            lo = mid
    i = lo - 1
    for _ in range(need):
        i = buf.find(b"\n", i + 1)
    return i
