"""The look at a file's first lines: timestamps in another unit than --precision, times it would floor."""

from __future__ import annotations

from pathlib import Path

from producers import preflight
from tsbatch.descriptor import FieldSpec, Mapping

NS_2024 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
CSV_RFC3339 = Mapping(measurement="cpu", field_columns=(FieldSpec(name="v"),))
JSONL_EPOCH = Mapping(measurement="cpu", field_columns=(FieldSpec(name="v"),), time_format="epoch")


def lp(*stamps: int) -> bytes:
    return b"".join(f"cpu,host=a v={i} {t}\n".encode() for i, t in enumerate(stamps))


def test_nanosecond_line_protocol_under_the_default_precision_passes_without_a_word() -> None:
    assert preflight.check(lp(NS_2024, NS_2024 + 1), format="lp", precision="ns") is None


def test_milliseconds_read_as_nanoseconds_land_in_1970_and_ms_is_suggested() -> None:
    found = preflight.check(lp(NS_2024 // 10**6), format="lp", precision="ns")
    assert found is not None
    assert "1970-01-01 (before 1971)" in found and "--precision ms" in found


def test_seconds_read_as_milliseconds_suggest_seconds() -> None:
    found = preflight.check(lp(NS_2024 // 10**9), format="lp", precision="ms")
    assert found is not None and found.endswith("they look like --precision s")


def test_nanoseconds_read_as_seconds_fall_after_2200() -> None:
    found = preflight.check(lp(NS_2024), format="lp", precision="s")
    assert found is not None and "after 2200" in found and "--precision ns" in found


def test_timestamps_no_precision_can_explain_are_reported_without_a_suggestion() -> None:
    found = preflight.check(lp(5), format="lp", precision="ns")
    assert found is not None and "no --precision puts them between 1971 and 2200" in found


def test_line_protocol_lines_without_a_timestamp_and_comments_are_not_read_as_times() -> None:
    data = b"# 12345\ncpu v=1\ncpu,host=a v=2i\n" + lp(NS_2024)
    assert preflight.lp_timestamps(preflight.sample_lines(data, complete=True)) == [NS_2024]


def test_a_line_cut_at_the_end_of_the_sample_is_left_out() -> None:
    data = lp(NS_2024) + b"cpu v=1 17040"  # the file goes on after this
    assert preflight.sample_lines(data, complete=False) == [lp(NS_2024).decode().strip()]


def test_only_the_first_hundred_records_are_looked_at() -> None:
    data = lp(*[NS_2024] * 100, 5)
    assert preflight.check(data, format="lp", precision="ns") is None


def test_epoch_milliseconds_in_json_lines_under_ns_suggest_ms() -> None:
    data = b'{"time": 1704067200000, "v": 1}\n{"time": "1704067201000", "v": 2}\n'
    found = preflight.check(data, format="jsonl", precision="ns", mapping=JSONL_EPOCH)
    assert found is not None and "--precision ms" in found


def test_epoch_milliseconds_in_json_lines_under_ms_pass() -> None:
    data = b'{"time": 1704067200000, "v": 1}\n'
    assert preflight.check(data, format="jsonl", precision="ms", mapping=JSONL_EPOCH) is None


def test_epoch_seconds_in_a_csv_time_column_under_ns_suggest_s() -> None:
    mapping = JSONL_EPOCH.model_copy(update={"time_column": "ts"})
    data = b"host,ts,v\na,1704067200,1\n"
    found = preflight.check(data, format="csv", precision="ns", mapping=mapping)
    assert found is not None and "--precision s" in found


def test_rfc3339_milliseconds_under_precision_s_would_be_floored_and_ms_is_suggested() -> None:
    data = b"time,v\n2024-01-01T00:00:00.123Z,1\n2024-01-01T00:00:00.500Z,2\n"
    found = preflight.check(data, format="csv", precision="s", mapping=CSV_RFC3339)
    assert found is not None
    assert "2024-01-01T00:00:00.123Z" in found and "floored" in found and "--precision ms" in found


def test_rfc3339_fractions_of_zeros_lose_nothing_under_precision_s() -> None:
    data = b"time,v\n2024-01-01T00:00:00.000Z,1\n2024-01-01T00:00:01Z,2\n"
    assert preflight.check(data, format="csv", precision="s", mapping=CSV_RFC3339) is None


def test_rfc3339_nanoseconds_under_precision_us_suggest_ns() -> None:
    data = b'{"time": "2024-01-01T00:00:00.123456789+02:00", "v": 1}\n'
    found = preflight.check(data, format="jsonl", precision="us", mapping=CSV_RFC3339)
    assert found is not None and found.endswith("use --precision ns")


def test_a_csv_without_the_time_column_is_left_to_planning() -> None:
    data = b"when,v\n2024-01-01T00:00:00.123Z,1\n"
    assert preflight.check(data, format="csv", precision="s", mapping=CSV_RFC3339) is None


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

    assert len(found) == 1
    assert found[0].startswith(f"{root / 'sub' / 'ms.lp'}: timestamps such as ")
