"""Parquet without servers: rows encoded column by column as ``encode_point`` writes them one by one,
files mapped from their schema, row groups cut into chunks, changed files refused, URLs confined."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from producers.parquet import ParquetColumns, descriptors, mapping_for
from tsbatch.descriptor import FieldSpec, Mapping
from tsbatch.errors import SourceError
from tsbatch.sources import check_url
from workers.arrowlines import ArrowEncoder
from workers.lineprotocol import encode_point
from workers.parquet import batches, read_chunk

# Tag and field keys with the characters line protocol escapes; values drawn from full unicode with
# those characters far more often than chance would.
_SPECIAL = st.sampled_from([",", "=", " ", '"', "\\", "\n", "\r", "\t", "#"])
texts = st.text(st.one_of(_SPECIAL, st.characters(exclude_categories=["Cs"])), max_size=6)  # UTF-8 only
rows = st.fixed_dictionaries(
    {
        "measurement": st.one_of(st.none(), st.sampled_from(["cpu", "disk io", "a,b", "#c", "d\\"]), texts),
        "host name": st.one_of(st.none(), texts),
        "rack=1": st.one_of(st.none(), texts),
        "f,1": st.one_of(st.none(), st.floats()),
        "i 2": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "b=3": st.one_of(st.none(), st.booleans()),
        "s\n4": st.one_of(st.none(), texts),
        "time": st.integers(-(2**62), 2**62),
    }
)
TAGS = ("host name", "rack=1")
FIELDS = {"f,1": "float", "i 2": "int", "b=3": "bool", "s\n4": "string"}
TYPES = {"f,1": pa.float64(), "i 2": pa.int64(), "b=3": pa.bool_(), "s\n4": pa.string()}
MAPPING = Mapping(
    measurement_column="measurement",
    tag_columns=TAGS,
    field_columns=tuple(FieldSpec(name=n, kind=k) for n, k in FIELDS.items()),  # type: ignore[arg-type]
)


def as_batch(records: list[dict[str, Any]], *, dictionary: bool) -> pa.RecordBatch:
    columns: dict[str, Any] = {
        "time": pa.array([r["time"] for r in records], pa.timestamp("ns", tz="UTC")),
        "measurement": pa.array([r["measurement"] for r in records], pa.string()),
        **{t: pa.array([r[t] for r in records], pa.string()) for t in TAGS},
        **{f: pa.array([r[f] for r in records], TYPES[f]) for f in FIELDS},
    }
    if dictionary:
        for name in ("measurement", *TAGS):
            columns[name] = columns[name].dictionary_encode()
    return pa.RecordBatch.from_pydict(columns)


def reference(record: dict[str, Any]) -> str | None:
    """What the row is: a line (encode_point's), None (no field: skipped), or "rejected"."""
    fields = {f: record[f] for f in FIELDS if record[f] is not None}
    if not fields:
        return None
    if any(isinstance(v, float) and not math.isfinite(v) for v in fields.values()):
        return "rejected"
    tags = {t: record[t] for t in TAGS if record[t] is not None}
    try:
        line = encode_point(record["measurement"] or "", tags, fields, record["time"])
    except ValueError:
        return "rejected"
    assert line is not None
    return line


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, min_size=1, max_size=25), st.booleans())
def test_rows_are_written_as_encode_point_writes_them_and_refused_where_it_refuses(
    records: list[dict[str, Any]], dictionary: bool
) -> None:
    encoder = ArrowEncoder(MAPPING, "ns", max_line_bytes=1 << 20)

    batch = encoder.encode(as_batch(records, dictionary=dictionary), first_row=7)

    want = [reference(r) for r in records]
    # The body, not lines(): a string field keeps a newline as it is, as Point writes it.
    assert batch.body.decode() == "".join(f"{w}\n" for w in want if w not in (None, "rejected"))
    assert list(batch.numbers) == [7 + i for i, w in enumerate(want) if w not in (None, "rejected")]
    assert [r.line for r in batch.rejected] == [7 + i for i, w in enumerate(want) if w == "rejected"]


NO_NAN = "(line protocol cannot store NaN or infinity)"


def test_refused_rows_say_why_with_their_row_number() -> None:
    records = [
        {"measurement": "m", "host name": "a", "rack=1": None, "f,1": math.inf, "i 2": 1, "b=3": None,
         "s\n4": None, "time": 1},
        {"measurement": "", "host name": None, "rack=1": None, "f,1": 1.0, "i 2": None, "b=3": None,
         "s\n4": None, "time": 2},
        {"measurement": "d\\", "host name": None, "rack=1": None, "f,1": 1.0, "i 2": None, "b=3": None,
         "s\n4": None, "time": 3},
        {"measurement": "m", "host name": None, "rack=1": None, "f,1": None, "i 2": None, "b=3": None,
         "s\n4": None, "time": 4},
        {"measurement": "m", "host name": None, "rack=1": None, "f,1": None, "i 2": None, "b=3": True,
         "s\n4": "x" * 100, "time": 5},
    ]  # fmt: skip
    encoder = ArrowEncoder(MAPPING, "ns", max_line_bytes=80)

    batch = encoder.encode(as_batch(records, dictionary=False), first_row=10)

    assert batch.lines() == [] and list(batch.numbers) == []
    assert [(r.line, r.reason) for r in batch.rejected] == [
        (10, "parquet row 10: column 'f,1': inf is not a finite float " + NO_NAN),
        (11, "parquet row 11: column 'measurement' (measurement) is empty"),
        (12, "parquet row 12: column 'measurement': measurement 'd\\' ends with a backslash"),
        (14, "parquet row 14: line longer than 80 bytes"),
    ]  # row 13 has no field: no point, skipped
    assert json.loads(batch.rejected[0].raw)["host name"] == "a"


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_any_timestamp_unit_and_zone_is_written_in_nanoseconds_and_floored_to_the_precision(
    unit: str, tz: str | None
) -> None:
    per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    stamps = pa.array([1_700_000_000_123_456_789 // per, -1], pa.timestamp(unit, tz=tz))
    batch = pa.RecordBatch.from_pydict({"time": stamps, "v": pa.array([1.5, 2.0])})
    mapping = Mapping(measurement="m", field_columns=(FieldSpec(name="v"),))

    ns = ArrowEncoder(mapping, "ns", max_line_bytes=100).encode(batch, first_row=1)
    ms = ArrowEncoder(mapping, "ms", max_line_bytes=100).encode(batch, first_row=1)

    assert ns.lines() == [f"m v=1.5 {1_700_000_000_123_456_789 // per * per}", f"m v=2 {-per}"]
    assert ms.lines()[1] == f"m v=2 {-per // 1_000_000 if per >= 10**6 else -1}"  # floored, as RecordEncoder


def test_unsigned_and_narrow_columns_keep_their_kind() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "time": pa.array([0], pa.timestamp("s")),
            "u": pa.array([2**64 - 1], pa.uint64()),
            "small": pa.array([-7], pa.int8()),
            "half": pa.array([0.1], pa.float32()),
        }
    )
    mapping = mapping_for(batch.schema, _NoMetadata(), ParquetColumns(measurement="m"), "x.parquet")

    line = ArrowEncoder(mapping, "ns", max_line_bytes=100).encode(batch, first_row=1).lines()

    assert line == [
        f"m half={float(pa.array([0.1], pa.float32())[0].as_py())},small=-7i,u=18446744073709551615u 0"
    ]


class _NoMetadata:
    metadata = None


def _schema(**types: Any) -> pa.Schema:
    return pa.schema(list(types.items()))


def test_without_metadata_string_columns_are_tags_and_the_rest_fields() -> None:
    schema = _schema(
        time=pa.timestamp("ms"), measurement=pa.dictionary(pa.int32(), pa.string()), host=pa.string(),
        v=pa.float64(), n=pa.int32(), ok=pa.bool_(),
    )  # fmt: skip

    mapping = mapping_for(schema, _NoMetadata(), ParquetColumns(), "x.parquet")

    assert mapping.measurement_column == "measurement" and mapping.tag_columns == ("host",)
    assert [(f.name, f.kind) for f in mapping.field_columns] == [("v", "float"), ("n", "int"), ("ok", "bool")]
    overridden = mapping_for(
        schema, _NoMetadata(), ParquetColumns(tag_columns=(), field_columns=("host", "v")), "x.parquet"
    )
    assert overridden.tag_columns == () and [f.kind for f in overridden.field_columns] == ["string", "float"]


NS = pa.timestamp("ns")
M = ParquetColumns(measurement="m")
UNFIT = [
    (
        {"time": NS, "v": pa.float64()},
        ParquetColumns(),
        "no string column 'measurement' (give --measurement)",
    ),
    ({"time": pa.int64(), "v": pa.float64()}, M, "no timestamp column 'time'"),
    ({"time": NS, "v": pa.list_(pa.int8())}, M, "column 'v' is list<item: int8>"),
    ({"time": NS, "v": pa.float64()}, ParquetColumns(measurement="m", field_columns=("w",)), "no column 'w'"),
    (
        {"time": NS, "v": pa.int8(), "w": pa.int8()},
        ParquetColumns(measurement="m", tag_columns=("v",)),
        "no string column 'v'",
    ),
    ({"time": NS, "h": pa.string()}, M, "no field column"),
]


@pytest.mark.parametrize(("types", "columns", "problem"), UNFIT)
def test_a_schema_that_does_not_fit_is_refused_saying_why(
    types: dict[str, Any], columns: ParquetColumns, problem: str
) -> None:
    with pytest.raises(SourceError, match=r"^x\.parquet: ") as e:
        mapping_for(_schema(**types), _NoMetadata(), columns, "x.parquet")

    assert problem in str(e.value) and e.value.reason == "bad_schema"


def _settings(root: Path, **producer: Any) -> Settings:
    return Settings(
        sources={"roots": [str(root)]},
        routes={"r": {"url": "http://127.0.0.1:1", "org": "o", "bucket": "b", "token": "t"}},
        producer=producer,
    )


def _write(path: Path, rows: int, group: int, *, offset: float = 0.0) -> pa.Table:
    table = pa.table(
        {
            "time": pa.array(range(rows), pa.timestamp("s", tz="UTC")),
            "measurement": pa.array(["m"] * rows),
            "host": pa.array([f"h{i % 3}" for i in range(rows)]),
            "v": pa.array([i + offset for i in range(rows)], pa.float64()),
        }
    )
    table = table.replace_schema_metadata(
        {"tsbatch": json.dumps({"version": 1, "tags": ["host"], "fields": ["v"]})}
    )
    pq.write_table(table, path, row_group_size=group)
    return table


def test_small_row_groups_are_chunked_in_runs_and_every_row_is_read_once(tmp_path: Path) -> None:
    src = tmp_path / "a.parquet"
    _write(src, 95, 10)
    s = _settings(tmp_path, chunk_lines=25)

    descs = list(descriptors(src, settings=s, job_id="j", route="r", precision="s", columns=ParquetColumns()))

    # Runs of two 10-row groups, then single groups as the end nears (producer.taper), the last one whole.
    assert [(d.row_groups, d.first_line, d.line_count) for d in descs] == [
        ((0, 2), 1, 20), ((2, 2), 21, 20), ((4, 2), 41, 20), ((6, 1), 61, 10), ((7, 1), 71, 10),
        ((8, 1), 81, 10), ((9, 1), 91, 5),
    ]  # fmt: skip
    untapered = _settings(tmp_path, chunk_lines=25, taper=False)
    plain = descriptors(
        src, settings=untapered, job_id="j", route="r", precision="s", columns=ParquetColumns()
    )
    assert [d.row_groups for d in plain] == [(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]
    lines = [
        line
        for d in descs
        for b in batches(read_chunk(d, s.sources), d, batch_lines=7, max_line_bytes=1000)
        for line in b.lines()
    ]
    assert lines == [f"m,host=h{i % 3} v={i} {i}" for i in range(95)]
    again = descriptors(src, settings=s, job_id="other", route="r", precision="s", columns=ParquetColumns())
    assert [d.key for d in again] == [d.key for d in descs]  # the same file plans the same keys


def test_a_file_rewritten_after_planning_is_refused_as_changed(tmp_path: Path) -> None:
    src = tmp_path / "a.parquet"
    _write(src, 40, 20)
    s = _settings(tmp_path)
    (desc,) = descriptors(src, settings=s, job_id="j", route="r", precision="s", columns=ParquetColumns())
    _write(src, 40, 20, offset=0.5)  # same shape, same size, other values

    with pytest.raises(SourceError) as e:
        read_chunk(desc, s.sources)

    assert e.value.reason == "source_changed"


def test_a_file_outside_the_roots_or_not_parquet_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "x.parquet").write_bytes(b"not parquet at all")
    s = _settings(tmp_path / "root")

    def plan(location: str) -> None:
        list(
            descriptors(location, settings=s, job_id="j", route="r", precision="ns", columns=ParquetColumns())
        )

    with pytest.raises(SourceError, match="not a Parquet file"):
        plan(str(tmp_path / "root" / "x.parquet"))
    with pytest.raises(SourceError, match="outside the source roots"):
        plan(str(tmp_path / "elsewhere.parquet"))
    with pytest.raises(SourceError, match=r"sources\.url_roots is empty"):
        plan("s3://bucket/x.parquet")


ROOTS = ["s3://b/archive/", "gcs://g/cold", "file:///srv/archive"]


@pytest.mark.parametrize(
    "url",
    [
        "s3://b/archive/x.parquet",
        "s3://b/archive/2024/01/x.parquet",
        "gcs://g/cold/x",
        "file:///srv/archive/x",
    ],
)
def test_a_url_under_a_root_is_accepted(url: str) -> None:
    assert check_url(url, ROOTS) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3://b/archive-old/x", "not under sources.url_roots (s3://b/archive/, gcs://g/cold, file:///srv/archive)"),
        ("s3://b/x.parquet", "not under sources.url_roots"),
        ("gs://g/cold/x", "not under sources.url_roots"),
        ("s3://b/archive/../secret/x", "'..' path segments are refused"),
        ("s3://b/archive//x", "path segments are refused"),
        ("s3://AKIA:secret@b/archive/x", "s3://***@b/archive/x: credentials in a URL are refused"),
        ("s3://b/archive/x?X-Amz-Signature=abc", "s3://b/archive/x?***: a URL with a query string"),
        ("file://host/srv/archive/x", "not a URL of the form"),
        ("s3://b/archive/x\n", "control characters"),
    ],
)  # fmt: skip
def test_a_url_outside_the_roots_or_that_could_carry_a_secret_is_refused(url: str, problem: str) -> None:
    with pytest.raises(SourceError) as e:
        check_url(url, ROOTS)

    assert problem in str(e.value)
    assert "AKIA" not in str(e.value) and "abc" not in str(e.value)
