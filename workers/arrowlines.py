"""Encode Arrow record batches (Parquet rows) as line protocol, column by column.

Each column becomes one array of text pieces with Arrow's compute kernels (``,host=a``, ``,usage=1.5``,
the timestamp); names are escaped once per distinct value (a dictionary); the pieces are joined row by
row in C++ (``binary_join_element_wise``), and the lines of a batch are one contiguous buffer, sent as
the body. Every value is written as ``workers/lineprotocol.py`` writes it (``tests/test_restore.py``
compares the two on arbitrary rows), and refused for the same reasons:

- a null tag, or an empty one, is absent; a null field is absent; a row with no field is no point and
  is skipped (not an error);
- NaN and infinities, a null or out-of-range time, an empty or unwritable measurement, a line longer
  than ``max_line_bytes``: the row is rejected with its number (1-based, in the file) and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tsbatch.descriptor import FieldKind, Mapping, Precision, writable_name
from tsbatch.ledger import RejectedLine
from workers.lineprotocol import escape_key, escape_measurement, escape_tag_value, format_float
from workers.mapping import NS_PER
from workers.parsers import RAW_KEEP_CHARS, Batch

_INT64_MAX = (1 << 63) - 1
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Arrow writes a double with its shortest round-trip digits, as Python's repr does, but chooses exponent
# notation differently (1e10 as "1e+10", 1e-5 as "0.00001"): a value Arrow writes with an exponent, or
# outside [1e-4, 1e16) where repr writes one, is written by format_float instead (found by hypothesis).
_PLAIN_FROM, _PLAIN_BELOW = 1e-4, 1e16


def _join(*pieces: Any) -> Any:
    """Row by row concatenation of string arrays and scalars; a null piece counts as empty."""
    return pc.binary_join_element_wise(*pieces, "", null_handling="replace", null_replacement="")


def _piece(*parts: Any) -> Any:
    """Row by row concatenation that stays null where a value is null (an absent field)."""
    return pc.binary_join_element_wise(*parts, "")


def _strings(column: Any) -> Any:
    """A string or dictionary<string> column as (dictionary values, indices)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    return column.dictionary, column.indices


class _Problems:
    """The first reason each row of a batch is refused for."""

    def __init__(self, rows: int) -> None:
        self.mask = np.zeros(rows, dtype=bool)
        self.reasons: dict[int, str] = {}

    def add(self, mask: Any, reason: Callable[[int], str]) -> None:
        fresh = np.asarray(mask, dtype=bool) & ~self.mask
        for i in np.flatnonzero(fresh).tolist():
            self.reasons[i] = reason(i)
        self.mask |= fresh


class ArrowEncoder:
    """Record batches with the columns a Parquet chunk's ``Mapping`` names -> ``Batch`` of line protocol."""

    def __init__(self, mapping: Mapping, precision: Precision, *, max_line_bytes: int) -> None:
        m = mapping.measurement
        self.measurement = escape_measurement(m) if m else None
        self.measurement_column = mapping.measurement_column
        # Sorted by key like influxdb_client.Point and RecordEncoder.
        self.tags = [(escape_key(t), t) for t in sorted(mapping.tag_columns)]
        self.fields = [
            (escape_key(f.name), f.name, f.kind) for f in sorted(mapping.field_columns, key=lambda f: f.name)
        ]
        self.time_column = mapping.time_column
        self.divisor = NS_PER[precision]
        self.max_line_bytes = max_line_bytes

    def columns(self) -> list[str]:
        wanted = [self.time_column, *(c for _, c in self.tags), *(c for _, c, _ in self.fields)]
        return list(dict.fromkeys(wanted + ([self.measurement_column] if self.measurement_column else [])))

    def encode(self, batch: Any, *, first_row: int) -> Batch:
        """The rows of ``batch`` (the first numbered ``first_row`` in the file) as one ``Batch``."""
        rows = batch.num_rows
        if not rows:
            return Batch()
        problems = _Problems(rows)
        lines, has_fields = self._lines(batch, problems)
        keep = has_fields & ~problems.mask
        numbers = (
            range(first_row, first_row + rows) if keep.all() else (np.flatnonzero(keep) + first_row).tolist()
        )
        rejected = [
            RejectedLine(first_row + i, f"parquet row {first_row + i}: {reason}", _raw(batch, i))
            for i, reason in sorted(problems.reasons.items())
            if has_fields[i]
        ]
        return Batch(body_of(lines if keep.all() else lines.filter(pa.array(keep))), numbers, rejected)

    def lines_of(self, batch: Any) -> Any:
        """The rows of ``batch`` as a string array of lines, each ending in a newline; None if any row
        would be rejected or skipped (``workers/columnar.py`` then leaves the chunk to the row path)."""
        problems = _Problems(batch.num_rows)
        lines, has_fields = self._lines(batch, problems)
        return lines if has_fields.all() and not problems.mask.any() else None

    def _lines(self, batch: Any, problems: _Problems) -> tuple[Any, Any]:
        """Every row's line (a refused row's too) and whether each row has a field."""
        stamps = self._times(batch.column(self.time_column), problems)
        measurement = self._measurements(batch, problems)
        tags = [self._tag(batch.column(column), key) for key, column in self.tags]
        fields = _join(
            *(self._field(batch.column(c), key, c, kind, problems) for key, c, kind in self.fields)
        )
        has_fields = pc.greater(pc.binary_length(fields), 0).to_numpy(zero_copy_only=False)
        lines = _join(measurement, *tags, " ", pc.utf8_slice_codeunits(fields, 1), " ", stamps, "\n")
        lengths = pc.binary_length(lines).to_numpy(zero_copy_only=False) - 1
        problems.add(lengths > self.max_line_bytes, lambda i: f"line longer than {self.max_line_bytes} bytes")
        return lines, has_fields

    def _times(self, column: Any, problems: _Problems) -> Any:
        factor = _UNIT_NS[column.type.unit]
        values = column.cast(pa.int64())
        problems.add(
            values.is_null().to_numpy(zero_copy_only=False),
            lambda i: f"column '{self.time_column}' (time) is empty",
        )
        raw = values.fill_null(0).to_numpy()
        if factor > 1:
            over = np.abs(raw) > _INT64_MAX // factor
            if over.any():
                unit = column.type.unit
                problems.add(
                    over,
                    lambda i: (
                        f"column '{self.time_column}': {int(raw[i])} {unit} is out of range for nanoseconds"
                    ),
                )
                raw = np.where(over, 0, raw)
        ns = raw * factor
        if self.divisor > 1:
            ns = ns // self.divisor
        return pa.array(ns).cast(pa.string())

    def _measurements(self, batch: Any, problems: _Problems) -> Any:
        if self.measurement is not None:
            return self.measurement
        column = str(self.measurement_column)
        values, indices = _strings(batch.column(column))
        texts: list[str | None] = []
        reasons: list[str] = []
        for value in values.to_pylist():
            try:
                if not value:
                    raise ValueError(f"column '{column}' (measurement) is empty")
                writable_name("measurement", value)
                texts.append(escape_measurement(value))
                reasons.append("")
            except ValueError as e:
                texts.append(None)
                reasons.append(str(e) if not value else f"column '{column}': {e}")
        out = pa.array(texts, pa.string()).take(indices)
        index = indices.to_numpy(zero_copy_only=False)
        empty = f"column '{column}' (measurement) is empty"
        problems.add(
            out.is_null().to_numpy(zero_copy_only=False),
            lambda i: reasons[int(index[i])] if indices[i].is_valid else empty,
        )
        return out

    @staticmethod
    def _tag(column: Any, key: str) -> Any:
        values, indices = _strings(column)
        texts = [f",{key}={escape_tag_value(v)}" if v else None for v in values.to_pylist()]
        return pa.array(texts, pa.string()).take(indices)

    def _field(self, column: Any, key: str, name: str, kind: FieldKind, problems: _Problems) -> Any:
        if kind == "float":
            return _piece(f",{key}=", self._floats(column, name, problems))
        if kind == "int":
            return _piece(f",{key}=", column.cast(pa.int64()).cast(pa.string()), "i")
        if kind == "uint":
            return _piece(f",{key}=", column.cast(pa.uint64()).cast(pa.string()), "u")
        if kind == "bool":
            return pc.if_else(column, f",{key}=true", f",{key}=false")
        text = column.cast(pa.string())
        escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        return _piece(f',{key}="', escaped, '"')

    @staticmethod
    def _floats(column: Any, name: str, problems: _Problems) -> Any:
        """format_float's text of each value (null stays null); NaN and infinities are refused."""
        values = column.cast(pa.float64())
        numbers = values.fill_null(0.0).to_numpy()
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        finite = np.isfinite(numbers)
        problems.add(
            valid & ~finite,
            lambda i: (
                f"column '{name}': {float(numbers[i])!r} is not a finite float "
                "(line protocol cannot store NaN or infinity)"
            ),
        )
        texts = values.cast(pa.string())
        magnitude = np.abs(numbers)
        exponent = pc.match_substring(texts, "e").fill_null(False).to_numpy(zero_copy_only=False)
        outside = (numbers != 0) & ((magnitude < _PLAIN_FROM) | (magnitude >= _PLAIN_BELOW))
        odd = valid & finite & (exponent | outside)
        if odd.any():
            replacements = [format_float(float(x)) for x in numbers[odd]]
            texts = pc.replace_with_mask(texts, pa.array(odd), pa.array(replacements, pa.string()))
        return texts


def body_of(lines: Any) -> bytes:
    """The lines of a string array (each ending in a newline) as one bytes object: its data buffer."""
    if not len(lines):
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    first, last = int(offsets[0]), int(offsets[-1])
    return lines.buffers()[2].slice(first, last - first).to_pybytes()  # type: ignore[no-any-return]


def _raw(batch: Any, i: int) -> str:
    """A rejected row as JSON, for the dead-letter queue (``dlq export`` prints it); times in RFC 3339
    with all their digits (a datetime would stop at microseconds)."""
    row = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            value = column.cast(pa.int64())[i].as_py()
            row[name] = None if value is None else f"{np.datetime64(value, column.type.unit)}Z"
        else:
            row[name] = column[i].as_py()
    return json.dumps(row, default=str, ensure_ascii=False)[:RAW_KEEP_CHARS]
