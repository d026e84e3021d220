"""The look at a file's first records: a mapping that reads none of them stops the job with what to try;
timestamps in another unit than --precision stop it too; times it would floor are warned about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producers import preflight
from tsbatch.descriptor import FieldSpec, Mapping

NS_2024 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
CSV_RFC3339 = Mapping(measurement="cpu", field_columns=(FieldSpec(name="v"),))
JSONL_EPOCH = Mapping(measurement="cpu", field_columns=(FieldSpec(name="v"),), time_format="epoch")


def lp(*stamps: int) -> bytes:
    return b"".join(f"cpu,host=a v={i} {t}\n".encode() for i, t in enumerate(stamps))


def check(data: bytes, **kwargs: Any) -> str | None:
    """The text of what ``preflight.check`` found (a stop or a warning), or None."""
    found = preflight.check(data, **kwargs)
    return None if found is None else found.text


def stop(data: bytes, **kwargs: Any) -> str:
    """The text of a finding that stops the job."""
    found = preflight.check(data, **kwargs)
    assert found is not None and found.stop, found
    return found.text


def warning(data: bytes, **kwargs: Any) -> str:
    """The text of a finding that only warns."""
    found = preflight.check(data, **kwargs)
    assert found is not None and not found.stop, found
    return found.text


def test_nanosecond_line_protocol_under_the_default_precision_passes_without_a_word() -> None:
    assert check(lp(NS_2024, NS_2024 + 1), format="lp", precision="ns") is None


def test_milliseconds_read_as_nanoseconds_land_in_1970_stop_the_job_and_ms_is_suggested() -> None:
    found = stop(lp(NS_2024 // 10**6), format="lp", precision="ns")
    assert "1970-01-01 (before 1971)" in found and "--precision ms" in found


def test_seconds_read_as_milliseconds_suggest_seconds() -> None:
    found = stop(lp(NS_2024 // 10**9), format="lp", precision="ms")
    assert found.endswith("they look like --precision s")


def test_nanoseconds_read_as_seconds_fall_after_2200() -> None:
    found = check(lp(NS_2024), format="lp", precision="s")
    assert found is not None and "after 2200" in found and "--precision ns" in found


def test_timestamps_no_precision_can_explain_only_warn_without_a_suggestion() -> None:
    found = warning(lp(5), format="lp", precision="ns")
    assert "no --precision puts them between 1971 and 2200" in found


def test_line_protocol_lines_without_a_timestamp_and_comments_are_not_read_as_times() -> None:
    data = b"# 12345\ncpu v=1\ncpu,host=a v=2i\n" + lp(NS_2024)
    assert preflight.lp_timestamps(preflight.sample_lines(data, complete=True)) == [NS_2024]


def test_a_line_cut_at_the_end_of_the_sample_is_left_out() -> None:
    data = lp(NS_2024) + b"cpu v=1 17040"  # the file goes on after this
    assert preflight.sample_lines(data, complete=False) == [lp(NS_2024).decode().strip()]


def test_only_the_first_preflight_rows_records_are_looked_at() -> None:
    data = lp(*[NS_2024] * 100, 5)
    assert check(data, format="lp", precision="ns", rows=100) is None
    assert check(data, format="lp", precision="ns", rows=101) is not None


def test_epoch_milliseconds_in_json_lines_under_ns_suggest_ms() -> None:
    data = b'{"time": 1704067200000, "v": 1}\n{"time": "1704067201000", "v": 2}\n'
    found = check(data, format="jsonl", precision="ns", mapping=JSONL_EPOCH)
    assert found is not None and "--precision ms" in found


def test_epoch_milliseconds_in_json_lines_under_ms_pass() -> None:
    data = b'{"time": 1704067200000, "v": 1}\n'
    assert check(data, format="jsonl", precision="ms", mapping=JSONL_EPOCH) is None


def test_epoch_seconds_in_a_csv_time_column_under_ns_suggest_s() -> None:
    mapping = JSONL_EPOCH.model_copy(update={"time_column": "ts"})
    data = b"host,ts,v\na,1704067200,1\n"
    found = check(data, format="csv", precision="ns", mapping=mapping)
    assert found is not None and "--precision s" in found


def test_rfc3339_milliseconds_under_precision_s_would_be_floored_and_ms_is_suggested() -> None:
    data = b"time,v\n2024-01-01T00:00:00.123Z,1\n2024-01-01T00:00:00.500Z,2\n"
    found = check(data, format="csv", precision="s", mapping=CSV_RFC3339)
    assert found is not None
    assert "2024-01-01T00:00:00.123Z" in found and "floored" in found and "--precision ms" in found


def test_rfc3339_fractions_of_zeros_lose_nothing_under_precision_s() -> None:
    data = b"time,v\n2024-01-01T00:00:00.000Z,1\n2024-01-01T00:00:01Z,2\n"
    assert check(data, format="csv", precision="s", mapping=CSV_RFC3339) is None


def test_rfc3339_nanoseconds_under_precision_us_suggest_ns() -> None:
    data = b'{"time": "2024-01-01T00:00:00.123456789+02:00", "v": 1}\n'
    found = check(data, format="jsonl", precision="us", mapping=CSV_RFC3339)
    assert found is not None and found.endswith("use --precision ns")


def test_a_csv_header_without_the_time_column_stops_the_job_naming_it() -> None:
    data = b"when,v\n2024-01-01T00:00:00.123Z,1\n"
    assert (
        stop(data, format="csv", precision="s", mapping=CSV_RFC3339) == "line 1: header lacks column(s) time"
    )


def test_check_paths_names_each_file_once_and_skips_files_outside_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "good.lp").write_bytes(lp(NS_2024))
    (root / "sub" / "ms.lp").write_bytes(lp(*[NS_2024 // 10**6] * 3))
    (outside / "ms.lp").write_bytes(lp(NS_2024 // 10**6))

    found = list(
        preflight.check_paths(
            [root, outside / "ms.lp", root / "missing.lp"], roots=[root], format="lp", precision="ns"
        )
    )

    assert len(found) == 1 and found[0].stop
    assert found[0].text.startswith(f"{root / 'sub' / 'ms.lp'}: timestamps such as ")


NOAA = Mapping(
    measurement="weather",
    tag_columns=("STATION",),
    field_columns=(FieldSpec(name="TMAX"),),
    time_column="DATE",
)


def noaa(*dates: str, sep: str = ",") -> bytes:
    header = sep.join(("STATION", "DATE", "TMAX"))
    return (header + "\n" + "".join(f"USW00023174{sep}{d}{sep}{i}\n" for i, d in enumerate(dates))).encode()


@pytest.mark.parametrize(
    ("dates", "hint"),
    [
        (("2012/01/01", "2012/01/02"), "try --time-format '%Y/%m/%d'"),
        (("2010/01/01 00:00", "2010/01/01 01:00"), "try --time-format '%Y/%m/%d %H:%M'"),
        (("Jan 1 2000", "Jan 2 2000"), "try --time-format '%b %d %Y'"),
        (("13/02/2024",), "try --time-format '%d/%m/%Y'"),
        (("01/02/2024",), "try --time-format '%d/%m/%Y' or '%m/%d/%Y'"),
        (("2024-01-01T00:00:00",), "try --time-format '%Y-%m-%dT%H:%M:%S'"),
        (("1704067200000",), "try --time-format epoch --precision ms"),
    ],
)
def test_times_that_are_not_rfc3339_stop_the_job_with_the_format_that_reads_them(
    dates: tuple[str, ...], hint: str
) -> None:
    found = stop(noaa(*dates), format="csv", precision="s", mapping=NOAA)

    assert f"line 2: time '{dates[0]}' is not RFC 3339" in found
    assert f"; {hint}" in found


def test_a_suggested_pattern_without_an_offset_names_timezone() -> None:
    found = stop(noaa("2010/01/01 00:00"), format="csv", precision="s", mapping=NOAA)
    assert found.endswith("(these times have no offset: add --timezone NAME unless they are UTC)")


def test_a_wrong_pattern_suggests_the_one_that_reads_the_times() -> None:
    mapping = NOAA.model_copy(update={"time_format": "%Y-%m-%d"})
    found = stop(noaa("2012/01/01"), format="csv", precision="s", mapping=mapping)
    assert found == (
        "the first record does not map; line 2: time '2012/01/01' does not match --time-format '%Y-%m-%d'; "
        "try --time-format '%Y/%m/%d' (these times have no offset: add --timezone NAME unless they are UTC)"
    )


def test_one_record_that_maps_is_enough_to_go_on() -> None:
    assert (
        check(noaa("2012/01/01", "2012-01-02T00:00:00Z"), format="csv", precision="s", mapping=NOAA) is None
    )


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "'\\t'"), ("|", "'|'")])
def test_a_header_read_with_the_wrong_delimiter_suggests_the_right_one(sep: str, shown: str) -> None:
    found = stop(noaa("2012-01-01T00:00:00Z", sep=sep), format="csv", precision="s", mapping=NOAA)
    assert found == f"line 1: header lacks column(s) STATION, TMAX, DATE; try --delimiter {shown}"


def test_rows_split_by_another_delimiter_than_their_header_suggest_it() -> None:
    data = b"STATION,DATE,TMAX\nUSW1;2012-01-01T00:00:00Z;1\n"
    found = stop(data, format="csv", precision="s", mapping=NOAA)
    assert found == ("the first record does not map; line 2: 1 columns, header has 3; try --delimiter ';'")


def test_a_file_without_a_header_suggests_columns() -> None:
    data = b"USW1,2012-01-01T00:00:00Z,1\n"
    found = stop(data, format="csv", precision="s", mapping=NOAA)
    assert found.endswith("the first line looks like data: give the column names with --columns a,b,c")


def test_with_columns_the_first_line_is_a_record() -> None:
    mapping = NOAA.model_copy(update={"columns": ("STATION", "DATE", "TMAX"), "time_format": "%b %d %Y"})
    assert check(b"USW1,Jan 1 2000,1", format="csv", precision="s", mapping=mapping) is None


def test_a_byte_order_mark_and_crlf_are_read_as_the_worker_reads_them() -> None:
    data = b"\xef\xbb\xbfDATE,TMAX\r\n2012-01-01T00:00:00Z,1\r\n"
    mapping = NOAA.model_copy(update={"tag_columns": ()})
    assert check(data, format="csv", precision="s", mapping=mapping) is None


def test_local_times_in_the_spring_gap_stop_with_their_reason() -> None:
    mapping = NOAA.model_copy(update={"time_format": "%Y/%m/%d %H:%M", "timezone": "America/Los_Angeles"})
    found = stop(noaa("2010/03/14 02:00", "2010/03/14 02:30"), format="csv", precision="s", mapping=mapping)
    assert found == (
        "the first 2 records do not map; line 2: time '2010/03/14 02:00' does not exist in "
        "America/Los_Angeles: the clocks skip it (from UTC-08:00 to UTC-07:00)"
    )


def test_json_lines_numbers_under_rfc3339_suggest_epoch_and_their_unit() -> None:
    data = b'{"time": 1704067200, "v": 1}\n{"time": 1704067260, "v": 2}\n'
    found = stop(data, format="jsonl", precision="ns", mapping=CSV_RFC3339)
    assert found.endswith("try --time-format epoch --precision s")


def test_json_lines_that_are_not_objects_stop_with_the_reason() -> None:
    found = stop(b"[1, 2]\n", format="jsonl", precision="ns", mapping=CSV_RFC3339)
    assert found == "the first record does not map; line 1: a JSON list, not an object"
