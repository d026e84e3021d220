"""The producer streams: chunks tile the file exactly, and memory does not grow with file size."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_settings
from producers import Producer, planner
from tsbatch import datagen

lines_strategy = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    lines=lines_strategy,
    final_newline=st.booleans(),
    chunk_lines=st.integers(1, 60),
    block=st.sampled_from([1, 3, 64, 4096]),
    taper=st.booleans(),
)
def test_chunks_tile_the_file_at_line_boundaries_whatever_the_read_block(
    lines: list[bytes], final_newline: bool, chunk_lines: int, block: int, taper: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        path.write_bytes(data)
        with path.open("rb") as f:
            chunks = list(planner.scan(f.fileno(), chunk_lines=chunk_lines, block_bytes=block, taper=taper))

    pos, line_no = 0, 1
    for ch in chunks:
        piece = data[ch.start : ch.end]
        assert ch.start == pos and ch.first_line == line_no
        assert hashlib.sha256(piece).hexdigest() == ch.sha256
        assert ch.end == len(data) or piece.endswith(b"\n")
        lines_in_piece = piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
        assert lines_in_piece == ch.line_count <= chunk_lines
        pos, line_no = ch.end, line_no + ch.line_count
    assert pos == len(data)


def test_a_files_last_chunks_taper_so_that_workers_finish_together(tmp_path: Path) -> None:
    path = tmp_path / "f.lp"
    datagen.write(path, "lp", series=10, points_per_series=1_000)  # 10,000 lines
    fd = os.open(path, os.O_RDONLY)

    sizes = [c.line_count for c in planner.scan(fd, chunk_lines=1_000, taper=True)]
    again = [c.line_count for c in planner.scan(fd, chunk_lines=1_000, taper=True)]

    assert sum(sizes) == 10_000 and sizes == again  # the same file, the same chunks (and keys)
    assert sizes[:7] == [1_000] * 7  # full chunks until two chunks' worth is left
    assert sizes[7:] == sorted(sizes[7:], reverse=True) and sizes[-1] <= 1_000 // 4
    untapered = [c.line_count for c in planner.scan(fd, chunk_lines=1_000)]
    assert untapered == [1_000] * 10
    # A file of at most two chunks stays whole: a job of many small files pays nothing for tapering.
    assert [c.line_count for c in planner.scan(fd, chunk_lines=6_000, taper=True)] == [6_000, 4_000]
    os.close(fd)


def _peak_submit_bytes(stack, path: Path) -> int:
    os.environ["TSBATCH_CONFIG"] = str(stack.config)
    try:
        producer = Producer(load_settings())
    finally:
        del os.environ["TSBATCH_CONFIG"]
    with producer:
        tracemalloc.start()
        try:
            sub = producer.submit([path], route="default")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert sub.enqueued > 0
    return peak


def test_producer_memory_does_not_grow_with_file_size(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 5_000, "max_queue_depth": 100_000})
    small, large = data_dir / "small.lp", data_dir / "large.lp"
    datagen.write(small, "lp", series=100, points_per_series=100)  # 10k lines, ~0.8 MB
    datagen.write(large, "lp", series=100, points_per_series=2_000)  # 200k lines, ~16 MB

    peak_small = _peak_submit_bytes(stack, small)
    peak_large = _peak_submit_bytes(stack, large)

    assert large.stat().st_size > 15 * small.stat().st_size
    # Both peaks are one read block plus constant overhead; 20x the data must not move it by 1 MiB.
    assert peak_large - peak_small < 1 << 20, (peak_small, peak_large)


def test_wait_wakes_on_the_last_commit_instead_of_polling(make_stack, data_dir: Path) -> None:
    stack = make_stack(producer={"chunk_lines": 2_000})
    stack.start_worker(concurrency=2)
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=500)  # 10,000 lines, several chunks
    os.environ["TSBATCH_CONFIG"] = str(stack.config)
    try:
        producer = Producer(load_settings())
    finally:
        del os.environ["TSBATCH_CONFIG"]
    with producer:
        sub = producer.submit([src], route="default")
        # A poll every 30 s would return up to 30 s late: the job's channel wakes it at the last commit.
        status = producer.wait(sub.job_id, timeout_s=120, poll_s=30)
        returned_ms = time.time() * 1000
    assert status.done and status.committed == status.units > 1
    assert returned_ms - status.last_ms < 1000
