"""InfluxDB annotated CSV, parsed as it streams: Flux query responses and ``influx query --raw`` exports.

    parser = AnnotatedCsvParser()
    for block in response:              # bytes, split anywhere
        for row in parser.feed(block):
            row.time_ns, row.measurement, row.field, row.value, row.tags()
    rows = parser.close()

The format (docs.influxdata.com, "Annotated CSV"): a table is ``#group``, ``#datatype`` and ``#default``
annotation rows, a header row and data rows. The first column is the annotation column: it names the
annotation in annotation rows and is empty everywhere else, so it is dropped from the columns. A new
annotation block (after an empty line) starts tables of another schema; tables of one schema follow
each other without one, told apart by their ``table`` column. An empty cell takes its column's
``#default``; an empty cell without a default is None (null), as in influxdb-client-python.

A Flux error arrives as a table ``,error,reference`` with HTTP 200, possibly after data rows: it raises
``FluxQueryError`` (tsbatch/errors.py), so no caller can take a partial result for a whole one.

Records are cut at line ends outside quotes (an even count of ``"`` so far: RFC 4180 doubles quotes
inside quoted fields), in bytes, so a block may end anywhere, inside a UTF-8 character, a quoted field
or a CRLF. Memory is bounded by one record (``max_record_bytes``), never by the stream. A quote inside
an unquoted field (not RFC 4180, never written by Flux) opens a quoted field here: the record then runs
to the next quote and is refused, with its first line's number.

Types: long and unsignedLong are ``int``, double ``float``, boolean ``bool``, string ``str``,
dateTime (RFC 3339, to the nanosecond, which ``datetime`` cannot hold) ``int`` nanoseconds since the
epoch; duration (Flux literals such as ``1mo2d``: months have no fixed length) and base64Binary stay
``str``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from typing import Final, Literal

from tsbatch.annotated_rows import (
    SYSTEM_COLUMNS,
    AnnotatedCsvError,
    Row,
    Schema,
    Table,
    Value,
    build_schema,
    convert_cells,
    rfc3339_ns,
)
from tsbatch.errors import FluxQueryError

__all__ = [
    "MAX_RECORD_BYTES",
    "SYSTEM_COLUMNS",
    "AnnotatedCsvError",
    "AnnotatedCsvParser",
    "FluxQueryError",
    "OnError",
    "RecordKind",
    "Row",
    "Schema",
    "Table",
    "TableContext",
    "Value",
    "record_kind",
    "rfc3339_ns",
    "split_cells",
]

RecordKind = Literal["empty", "annotation", "header", "data"]
OnError = Callable[[AnnotatedCsvError | FluxQueryError], None]

MAX_RECORD_BYTES: Final = 1 << 20  # as worker.max_line_bytes: a 1 MiB record is no telemetry row


def record_kind(text: str, header_seen: bool) -> RecordKind:
    """What a record is, given whether its block has had its header (the planner and the parser
    must agree on this, so that a chunk's table context is what the parser would have seen)."""
    if not text:
        return "empty"
    if text[0] == "#":
        return "annotation"
    return "data" if header_seen else "header"


class TableContext:
    """The annotation rows and header in effect at a point of a stream: what a chunk starting there
    needs to be parsed on its own (``text``, one record a line, in the chunk's descriptor)."""

    def __init__(self) -> None:
        self.records: list[str] = []
        self.header_seen = False

    def see(self, text: str) -> RecordKind:
        kind = record_kind(text, self.header_seen)
        if kind == "empty":
            self.records, self.header_seen = [], False
        elif kind == "annotation":
            if self.header_seen:  # a new block without the empty line before it
                self.records, self.header_seen = [], False
            self.records.append(text)
        elif kind == "header":
            self.records.append(text)
            self.header_seen = True
        return kind

    @property
    def text(self) -> str:
        return "".join(r + "\n" for r in self.records)


def split_cells(text: str) -> list[str]:
    """The cells of one record's text (quoted fields may hold commas, quotes and line ends)."""
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader((text,), strict=True), [""])
    except csv.Error as e:
        raise ValueError(f"malformed CSV: {e}") from None


def context_records(context: str) -> Iterator[str]:
    """The records of a ``TableContext.text`` (a quoted field may hold a line end)."""
    pending: list[str] = []
    odd = False
    for line in context.split("\n")[:-1]:
        pending.append(line)
        odd ^= line.count('"') % 2 == 1
        if not odd:
            yield "\n".join(pending)
            pending = []


class AnnotatedCsvParser:
    """Rows from annotated CSV fed in pieces of any size; see the module's docstring.

    Keyword arguments: ``first_line``, the number of the first line fed (for a chunk of a file);
    ``context``, the ``TableContext.text`` in effect where the input starts (a chunk's descriptor
    carries it); ``max_record_bytes``, beyond which a record stops the parse (``AnnotatedCsvError``
    even with ``on_error``: a quoted field that never closes cannot be skipped reliably);
    ``on_error``, called with each malformed row (``AnnotatedCsvError``) and each error-table row
    (``FluxQueryError``) instead of raising it, the parse going on (a file load rejects bad lines one
    by one); without it, both are raised. After a raise, the parser is not usable.
    """

    def __init__(
        self,
        *,
        first_line: int = 1,
        context: str = "",
        max_record_bytes: int = MAX_RECORD_BYTES,
        on_error: OnError | None = None,
    ) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of the pending record already searched for line ends
        self._odd = False  # an odd number of quotes in the pending record so far: a quoted field is open
        self._inner = 0  # line ends inside the pending record so far
        self._line = first_line  # the pending record's first line
        self._max = max_record_bytes
        self._on_error = on_error
        self._context = TableContext()
        self._annotations: dict[str, list[str]] = {}
        self._schema: Schema | None = None
        self._broken = ""  # why this block's header cannot be used
        self._table: Table | None = None
        self._error_at = -1  # the line of an error table's header whose message has not come yet
        for text in context_records(context):
            self._record(0, text, [])

    @property
    def context(self) -> str:
        """The annotation rows and header in effect now (``TableContext.text``)."""
        return self._context.text

    def feed(self, data: bytes) -> list[Row]:
        self._buf += data
        out: list[Row] = []
        for line, text in self._split():
            self._record(line, text, out)
        return out

    def close(self) -> list[Row]:
        """The rows of a last line without a line end; raises for an unclosed quoted field."""
        out: list[Row] = []
        tail = bytes(self._buf)
        self._buf.clear()
        if tail:
            odd = self._odd ^ (tail.count(b'"', self._scanned) % 2 == 1)
            text = _decoded(tail.removesuffix(b"\r"))
            if odd:
                self._fail(AnnotatedCsvError(self._line, "a quoted field is never closed", text or ""))
            elif text is None:
                self._fail(AnnotatedCsvError(self._line, "not valid UTF-8", _lossy(tail)))
            else:
                self._record(self._line, text, out)
        if self._error_at >= 0:
            self._error_at, line = -1, self._error_at
            self._fail(FluxQueryError("an error table without a message", line=line))
        return out

    def _split(self) -> list[tuple[int, str]]:
        """The complete records in the buffer, (first line, text without its line end), removed
        from it; a record that is not UTF-8 is reported here."""
        buf, pos, odd, line, inner = self._buf, self._scanned, self._odd, self._line, self._inner
        start, out = 0, []
        if not odd and buf.find(b'"', pos) < 0:  # no quotes: every line end ends a record
            last = buf.rfind(b"\n", pos)
            if last >= 0:
                block = bytes(buf[:last])
                text = _decoded(block)
                if text is not None:
                    texts = text.replace("\r\n", "\n").split("\n")
                    texts[-1] = texts[-1].removesuffix("\r")
                    out = [(line + i, t) for i, t in enumerate(texts)]
                    line, start = line + len(texts), last + 1
                    pos = start
        while (nl := buf.find(b"\n", pos)) >= 0:
            odd ^= buf.count(b'"', pos, nl) % 2 == 1
            pos = nl + 1
            if odd:
                inner += 1
                continue
            raw = bytes(buf[start:nl]).removesuffix(b"\r")
            text = _decoded(raw)
            if text is None:
                self._fail(AnnotatedCsvError(line, "not valid UTF-8", _lossy(raw)))
            else:
                out.append((line, text))
            line, inner, start = line + inner + 1, 0, pos
        if len(buf) - start > self._max:
            raise AnnotatedCsvError(
                line, f"a record longer than {self._max} bytes (a quoted field that never closes?)"
            )
        del buf[:start]
        self._scanned, self._odd, self._line, self._inner = pos - start, odd, line, inner
        return out

    def _fail(self, err: AnnotatedCsvError | FluxQueryError) -> None:
        if self._on_error is None:
            raise err
        self._on_error(err)

    def _record(self, line: int, text: str, out: list[Row]) -> None:
        had_header = self._context.header_seen
        kind = self._context.see(text)
        if kind == "data":
            row = self._row(line, text)
            if row is not None:
                out.append(row)
            return
        if kind == "empty" or (kind == "annotation" and had_header):
            self._annotations, self._schema, self._broken, self._table = {}, None, "", None
        if kind == "empty":
            return
        try:
            cells = split_cells(text)
        except ValueError as e:
            self._broken = f"the table's {kind} at line {line} is malformed"
            self._fail(AnnotatedCsvError(line, str(e), text))
            return
        if kind == "annotation":
            name = cells[0][1:]
            if name in ("group", "datatype", "default"):
                self._annotations[name] = cells
            return
        try:
            self._schema = build_schema(cells, self._annotations)
        except ValueError as e:
            self._broken = f"the table's header at line {line} cannot be used ({e})"
            self._fail(AnnotatedCsvError(line, f"table header: {e}", text))
            return
        if self._schema.is_error:
            self._error_at = line

    def _row(self, line: int, text: str) -> Row | None:
        schema = self._schema
        if schema is None:
            self._fail(AnnotatedCsvError(line, self._broken or "a data row before any header", text))
            return None
        try:
            cells = split_cells(text)
            if schema.leading:
                if cells[0]:
                    raise ValueError("a data row must leave the annotation column empty")
                del cells[0]
            if len(cells) != len(schema.columns):
                raise ValueError(f"{len(cells)} columns, the header has {len(schema.columns)}")
            values = convert_cells(schema, cells)
        except ValueError as e:
            problem = str(e)
        else:
            problem = ""
        if problem:  # reported outside the except block: the error raised carries no stale context
            self._fail(AnnotatedCsvError(line, problem, text))
            return None
        if schema.is_error:
            self._error_at = -1
            message, reference = cells[0] or schema.defaults[0], cells[1] or schema.defaults[1]
            self._fail(FluxQueryError(message, reference or None, line=line, raw=text))
            return None
        return Row(self._table_of(schema, values), values, cells, line, text)

    def _table_of(self, schema: Schema, values: list[Value]) -> Table:
        result = values[schema.result_at] if schema.result_at >= 0 else None
        table_id = values[schema.table_at] if schema.table_at >= 0 else None
        table = self._table
        if table is None or table.result != result or table.table_id != table_id:
            table = self._table = Table(
                schema,
                None if result is None else str(result),
                table_id if isinstance(table_id, int) else None,
            )
        return table


def _decoded(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lossy(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
