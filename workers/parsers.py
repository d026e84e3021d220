"""Split a chunk's bytes into validated batches of line protocol, keeping rejected lines with reasons.

Line protocol is validated and passed through unchanged; CSV and JSON Lines records are mapped by a
``RecordEncoder``. A line that cannot be used becomes a ``RejectedLine`` (file line number, reason,
text) and the rest of the chunk goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from tsbatch.annotated_csv import AnnotatedCsvError, AnnotatedCsvParser
from tsbatch.descriptor import ChunkDescriptor
from tsbatch.errors import FluxQueryError, SourceError
from tsbatch.ledger import RejectedLine
from tsbatch.newlines import nth_newline
from tsbatch.records import csv_cells, json_record
from workers.lineprotocol import valid_block, validate_line
from workers.mapping import AnnotatedRowEncoder, RecordEncoder, RowEncoder

RAW_KEEP_CHARS = 65_536  # a rejected line is kept whole up to 64 KiB, enough to replay any sane line
FEED_BYTES = 1 << 16  # annotated CSV is parsed this much at a time: rows in memory stay about a batch


@dataclass(slots=True)
class Batch:
    """One write's worth of line protocol and the lines of the source left out of it."""

    body: bytes = b""  # line protocol, every line ending in "\n"
    numbers: Sequence[int] = ()  # source line number of each line of ``body``
    rejected: list[RejectedLine] = field(default_factory=list)

    @classmethod
    def of_lines(cls, lines: Sequence[str], numbers: Sequence[int]) -> Batch:
        return cls(("\n".join(lines) + "\n").encode() if lines else b"", numbers)

    def lines(self) -> list[str]:
        return self.body.decode("utf-8").split("\n")[:-1]

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half of the lines (for bisecting a batch the server refused)."""
        mid = len(self.numbers) // 2
        cut = nth_newline(self.body, 0, mid) + 1
        return Batch(self.body[:cut], self.numbers[:mid]), Batch(self.body[cut:], self.numbers[mid:])


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
    columns, delimiter = desc.mapping.columns, desc.mapping.delimiter
    rows = RowEncoder(records, columns) if RowEncoder.covers(records, columns) else None

    def encode(line: str) -> str:
        row = csv_cells(line, delimiter)
        if len(row) != len(columns):
            raise ValueError(f"{len(row)} columns, header has {len(columns)}")
        if rows is not None:
            return rows.encode(row)
        return records.encode(dict(zip(columns, row, strict=True)))

    return encode


def _jsonl_encoder(desc: ChunkDescriptor) -> Encoder:
    assert desc.mapping is not None
    records = RecordEncoder(desc.mapping, desc.precision)

    def encode(line: str) -> str:
        return records.encode(json_record(line))

    return encode


BlockEncoder = Callable[[list[str]], "list[str] | None"]  # a batch's lines at once, or None: line by line


def block_encoder_for(desc: ChunkDescriptor) -> BlockEncoder | None:
    """The batch-at-once encoder of CSV rows (``RowEncoder.encode_block``), where the mapping has one."""
    if desc.format != "csv" or desc.mapping is None:
        return None
    records = RecordEncoder(desc.mapping, desc.precision)
    columns = desc.mapping.columns
    if not RowEncoder.covers(records, columns):
        return None
    return RowEncoder(records, columns, delimiter=desc.mapping.delimiter).encode_block


def encoder_for(desc: ChunkDescriptor) -> Encoder:
    if desc.format == "csv":
        return _csv_encoder(desc)
    if desc.format == "jsonl":
        return _jsonl_encoder(desc)
    return _lp_encoder()


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_lines(data: bytes) -> Iterator[tuple[str | None, bytes]]:
    """Each line as text (None when it is not UTF-8) and its bytes."""
    text = _utf8(data)
    if text is None:
        for raw in data.split(b"\n"):
            try:
                yield raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield None, raw
        return
    for line in text.split("\n"):
        yield line, b""


@dataclass(slots=True)
class _LineCheck:
    """The per-line checks every line goes through (unless its whole batch passed ``valid_block``)."""

    encode: Encoder
    max_line_bytes: int
    skip_comments: bool

    def add(self, batch: _Lines, number: int, line: str) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip() or (self.skip_comments and line.startswith("#")):
            return
        if len(line) * 4 > self.max_line_bytes and len(line.encode()) > self.max_line_bytes:
            reason = f"line longer than {self.max_line_bytes} bytes"
            batch.rejected.append(RejectedLine(number, reason, line[:RAW_KEEP_CHARS]))
            return
        try:
            batch.lines.append(self.encode(line))
        except (ValueError, csv.Error) as e:
            batch.rejected.append(RejectedLine(number, str(e), line[:RAW_KEEP_CHARS]))
            return
        batch.numbers.append(number)


@dataclass(slots=True)
class _Lines:
    """A batch being built line by line (the slow path)."""

    lines: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)

    def batch(self) -> Batch:
        done = Batch.of_lines(self.lines, self.numbers)
        done.rejected = self.rejected
        return done


def _lp_batches(
    data: bytes, size: int, first_line: int, line_count: int, batch_lines: int, check: _LineCheck
) -> Iterator[Batch]:
    """Line protocol (valid UTF-8) up to ``size`` (where a final newline, if any, is), ``batch_lines``
    source lines at a time.

    A batch whose lines all pass one ``valid_block`` call is sent as the very bytes of the file; any
    other batch goes line by line through ``check``."""
    # Where a batch of average lines would end: nth_newline counts up to there and walks the rest.
    hint = round(batch_lines * len(data) / max(line_count, 1))
    pos, number = 0, first_line
    while pos <= size:
        cut = min(nth_newline(data, pos, batch_lines, hint=hint), size)
        block = data[pos:cut]
        count = batch_lines if cut < size else block.count(b"\n") + 1
        if _short_lines(block, check.max_line_bytes) and valid_block(block):
            yield Batch(block + b"\n", range(number, number + count))
        else:
            yield from _line_by_line(block.decode("utf-8").split("\n"), number, check)
        pos, number = cut + 1, number + count


def _text_batches(
    text: str, first_line: int, batch_lines: int, check: _LineCheck, encode_block: BlockEncoder
) -> Iterator[Batch]:
    """CSV text, ``batch_lines`` source lines at a time: a batch ``encode_block`` takes as a whole is
    sent as it encodes it; any other goes line by line through ``check``."""
    lines = text.split("\n")
    short_enough = check.max_line_bytes // 4  # a str of n characters is at most 4n bytes of UTF-8
    for i in range(0, len(lines), batch_lines):
        group = lines[i : i + batch_lines]
        number = first_line + i
        encoded = encode_block(group) if max(map(len, group)) <= short_enough else None
        if encoded is not None:
            yield Batch.of_lines(encoded, range(number, number + len(group)))
        else:
            yield from _line_by_line(group, number, check)


def _line_by_line(lines: list[str], number: int, check: _LineCheck) -> Iterator[Batch]:
    """A batch of source lines (the first one numbered ``number``) that ``check`` takes one by one."""
    batch = _Lines()
    for offset, line in enumerate(lines):
        check.add(batch, number + offset, line)
    if batch.lines or batch.rejected:
        yield batch.batch()


def _short_lines(block: bytes, max_line_bytes: int) -> bool:
    """No line of ``block`` is longer than ``max_line_bytes`` (checked line by line only when the
    whole block is longer: with the defaults, a 5,000-line batch is a third of one line's limit)."""
    return len(block) <= max_line_bytes or max(map(len, block.split(b"\n"))) <= max_line_bytes


def _rejection(problem: AnnotatedCsvError | FluxQueryError) -> RejectedLine:
    if isinstance(problem, FluxQueryError):
        # An export cut short by a failed query: the rows before it are loaded, the job says why.
        reason = f"the file holds a Flux error table: {problem.message}"
        reason += f" (reference {problem.reference})" if problem.reference else ""
        return RejectedLine(problem.line, reason, problem.raw[:RAW_KEEP_CHARS])
    return RejectedLine(problem.line, problem.reason, problem.raw[:RAW_KEEP_CHARS])


def _annotated_batches(
    data: bytes, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int
) -> Iterator[Batch]:
    """Annotated CSV, parsed ``FEED_BYTES`` at a time from the chunk's table context: each row is a
    line of protocol or a rejected line (malformed, unmappable, too long), with its file line number."""
    problems: list[AnnotatedCsvError | FluxQueryError] = []
    parser = AnnotatedCsvParser(
        first_line=desc.first_line,
        context=desc.table_context,
        max_record_bytes=len(data) + 1,  # the chunk is in memory already; long rows are refused below
        on_error=problems.append,
    )
    encoder = AnnotatedRowEncoder(desc.precision)
    batch = _Lines()
    for i in range(0, len(data) + FEED_BYTES, FEED_BYTES):
        rows = parser.feed(data[i : i + FEED_BYTES]) if i < len(data) else parser.close()
        batch.rejected += map(_rejection, problems)
        problems.clear()
        for row in rows:
            try:
                if len(row.raw) * 4 > max_line_bytes and len(row.raw.encode()) > max_line_bytes:
                    raise ValueError(f"line longer than {max_line_bytes} bytes")
                batch.lines.append(encoder.encode(row))
            except ValueError as e:
                reason = e.reason if isinstance(e, AnnotatedCsvError) else str(e)
                batch.rejected.append(RejectedLine(row.line, reason, row.raw[:RAW_KEEP_CHARS]))
                continue
            batch.numbers.append(row.line)
            if len(batch.lines) >= batch_lines:
                yield batch.batch()
                batch = _Lines()
    if batch.lines or batch.rejected:
        yield batch.batch()


def batches(data: bytes, desc: ChunkDescriptor, *, batch_lines: int, max_line_bytes: int) -> Iterator[Batch]:
    """Validated batches of at most ``batch_lines`` lines; rejected lines ride along in each batch."""
    if desc.format == "annotated-csv":
        yield from _annotated_batches(data, desc, batch_lines=batch_lines, max_line_bytes=max_line_bytes)
        return
    try:
        encode = encoder_for(desc)
    except ValueError as e:
        raise SourceError(f"{desc.path}: mapping cannot be used: {e}", reason="bad_mapping") from None
    check = _LineCheck(encode, max_line_bytes, skip_comments=desc.format == "lp")
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    # ASCII is UTF-8, and isascii() runs at memory speed where decoding 14 MB took 8% of a worker.
    if desc.format == "lp" and (data.isascii() or _utf8(data) is not None):
        yield from _lp_batches(data, end, desc.first_line, desc.line_count, batch_lines, check)
        return
    data = data[:end]
    text = _utf8(data)
    if text is not None and "\r\n" in text:
        text = text.replace("\r\n", "\n")  # CRLF files take the batch path too (a line's \r is cut anyway)
    encode_block = block_encoder_for(desc)
    if encode_block is not None and text is not None:
        yield from _text_batches(text, desc.first_line, batch_lines, check, encode_block)
        return
    batch = _Lines()
    number = desc.first_line - 1
    for line, raw in _decode_lines(data):
        number += 1
        if line is None:
            batch.rejected.append(RejectedLine(number, "not valid UTF-8", raw.decode("utf-8", "replace")))
            continue
        check.add(batch, number, line)
        if len(batch.lines) >= batch_lines:
            yield batch.batch()
            batch = _Lines()
    if batch.lines or batch.rejected:
        yield batch.batch()
