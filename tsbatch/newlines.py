"""Find the n-th newline in a buffer without splitting it into lines.

The producer cuts files into chunks and the worker cuts chunks into batches this way: ``bytes.count``
runs at memory speed, so a window is counted, halved while it still holds the newline, and only the
last few dozen bytes are searched one newline at a time. Nothing is copied.
"""

from __future__ import annotations

_LINEAR_BYTES = 256  # below this window size, bytes.find per newline beats another halving


def nth_newline(buf: bytes | bytearray, start: int, n: int, *, hint: int = 0) -> int:
    """Index of the ``n``-th ``\\n`` in ``buf[start:]`` (``n`` >= 1), or ``len(buf)`` if it has fewer.

    ``hint`` is a guess of how many bytes ``n`` lines take: the first window is that wide and doubles
    until it holds ``n`` newlines, so a good guess means each byte is counted about twice. Without a
    hint the window is the rest of the buffer.
    """
    size = len(buf)
    width = hint if hint > 0 else size - start
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
