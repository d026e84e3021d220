"""``tsbatch audit verify``: re-derive what each audited unit wrote from its source, and say where that no
longer holds.

- a **chunk**: its byte range is read again from the file and must still hash to the chunk's SHA-256
  (a byte changed in place, at the same size, is found); then its batches are rebuilt with the same
  parser and batch size, and the SHA-256 over their bodies must equal the one committed (a chunk whose
  server refused lines was bisected into other bodies: for it only the source check applies);
- an **archive window**: its Parquet file must exist with the committed size, SHA-256 and row digest;
- a **downsample or copy window**: its source's fingerprint must equal the committed one (a difference
  is late data: ``tsbatch windows verify`` re-runs such windows).
"""

from __future__ import annotations

import hashlib
from typing import Any

from tsbatch.descriptor import ChunkDescriptor
from tsbatch.errors import SourceError
from tsbatch.windows import WindowDescriptor, iso
from workers.parsers import batches
from workers.runtime import Runtime


def check_chunk(rt: Runtime, desc: ChunkDescriptor, record: dict[str, Any]) -> str:
    from workers.chunks import read_range

    try:
        data = read_range(desc, rt.settings.sources.roots)
    except SourceError as e:
        return f"source changed: {e}"
    if int(record.get("rejected", 0)) or "batch_lines" not in record:
        return ""  # bisected bodies (or a record from before batch_lines was kept): the source check only
    w = rt.settings.worker
    digests = [
        hashlib.sha256(b.body).digest()
        for b in batches(data, desc, batch_lines=int(record["batch_lines"]), max_line_bytes=w.max_line_bytes)
        if b.numbers
    ]
    if hashlib.sha256(b"".join(digests)).hexdigest() != record.get("sha256"):
        return f"{desc.path}:{desc.first_line}: the lines written no longer follow from the file"
    return ""


async def check_window(rt: Runtime, desc: WindowDescriptor, record: dict[str, Any]) -> str:
    from tsbatch.cli_lifecycle import check_archive
    from workers.windows import fingerprint_window

    if desc.definition.kind == "archive":
        return check_archive(record)
    now = (await fingerprint_window(rt, desc.definition, desc.start, desc.end)).hexdigest()
    if now != record.get("fingerprint"):
        return (
            f"job {desc.job} window {iso(desc.start)}: source changed since the commit "
            f"({record.get('fingerprint')} -> {now}): `tsbatch windows verify` re-runs it"
        )
    return ""


async def check(rt: Runtime, entry: dict[str, Any]) -> str:
    """Why an audit record no longer holds ("" if it does)."""
    message, record = entry.get("descriptor"), entry.get("record") or {}
    if not isinstance(message, dict):
        return "the record has no descriptor"
    if message.get("unit") == "window":
        return await check_window(rt, WindowDescriptor.model_validate(message), record)
    return check_chunk(rt, ChunkDescriptor.model_validate(message), record)
