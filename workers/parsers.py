"""Split a chunk's bytes into validated batches of line protocol, keeping rejected lines with reasons.

Line protocol is validated and passed through unchanged; CSV and JSON Lines records are mapped by a
``RecordEncoder``. A line that cannot be used becomes a ``RejectedLine`` (file line number, reason,
text) and the rest of the chunk goes on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tsbatch.descriptor import ChunkDescriptor
from tsbatch.errors import SourceError
from tsbatch.ledger import RejectedLine
from workers.lineprotocol import validate_line
from workers.mapping import RecordEncoder

RAW_KEEP_CHARS = 65_536  # a rejected line is kept whole up to 64 KiB, enough to replay any sane line


@dataclass(slots=True)
class Batch:
    lines: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # source line number of each line
    rejected: list[RejectedLine] = field(default_factory=list)


Encoder = Callable[[str], str]  # raw line -> line protocol, or ValueError(reason)


def _lp_encoder() -> Encoder:
    def encode(line: str) -> str:
        reason = validate_line(line)
        if reason is not None:
            raise ValueError(reason)
        return line

    return encode


def _csv_encoder(desc: ChunkDescriptor) -> Encoder:
    assert desc.mapping is not None
    records = RecordEncoder(desc.mapping, desc.precision)
    columns = desc.mapping.columns

    def encode(line: str) -> str:
        # One reader per quoted line: a stray quote must not swallow the following lines.
        row = next(csv.reader((line,), strict=True)) if '"' in line else line.split(",")
        if len(row) != len(columns):
            raise ValueError(f"{len(row)} columns, header has {len(columns)}")
        return records.encode(dict(zip(columns, row, strict=True)))

    return encode


def _jsonl_encoder(desc: ChunkDescriptor) -> Encoder:
    assert desc.mapping is not None
    records = RecordEncoder(desc.mapping, desc.precision)

    def encode(line: str) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
        return records.encode(record)

    return encode


def encoder_for(desc: ChunkDescriptor) -> Encoder:
    if desc.format == "csv":
        return _csv_encoder(desc)
    if desc.format == "jsonl":
        return _jsonl_encoder(desc)
    return _lp_encoder()


def _decode_lines(data: bytes) -> Iterator[tuple[str | None, bytes]]:
    """Each line as text (None when it is not UTF-8) and its bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for raw in data.split(b"\n"):
            try:
                yield raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield None, raw
        return
    for line in text.split("\n"):
        yield line, b""


def batches(data: bytes, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int) -> Iterator[Batch]:
    """Validated batches of at most ``batch_lines`` lines; rejected lines ride along in each batch."""
    try:
        encode = encoder_for(desc)
    except ValueError as e:
        raise SourceError(f"{desc.path}: mapping cannot be used: {e}", reason="bad_mapping") from None
    batch = Batch()
    number = desc.first_line - 1
    skip_comments = desc.format == "lp"
    for line, raw in _decode_lines(data[:-1] if data.endswith(b"\n") else data):
        number += 1
        if line is None:
            batch.rejected.append(RejectedLine(number, "not valid UTF-8", raw.decode("utf-8", "replace")))
            continue
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip() or (skip_comments and line.startswith("#")):
            continue
        if len(line) * 4 > max_line_bytes and len(line.encode()) > max_line_bytes:
            reason = f"line longer than {max_line_bytes} bytes"
            batch.rejected.append(RejectedLine(number, reason, line[:RAW_KEEP_CHARS]))
            continue
        try:
            batch.lines.append(encode(line))
        except (ValueError, csv.Error) as e:
            batch.rejected.append(RejectedLine(number, str(e), line[:RAW_KEEP_CHARS]))
            continue
        batch.numbers.append(number)
        if len(batch.lines) >= batch_lines:
            yield batch
            batch = Batch()
    if batch.lines or batch.rejected:
        yield batch
