"""The columnar path against the row path (issue #12): per-row cost of one 200,000-row CSV and JSON Lines
chunk in this process (best of 3), and `tsbatch produce FILE --wait` points/s on a 1,000,000-row file
with one `tsbatch worker --concurrency 2`, `worker.columnar` off and on, alternated (best of ``--runs``).

    .venv/bin/python scripts/columnar_bench.py [--rows 1000000] [--runs 2] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench  # scripts/bench.py: the stack, the workers and the pipeline's clock

from tsbatch import datagen
from tsbatch.descriptor import ChunkDescriptor, FieldSpec, Mapping
from tsbatch.localstack import start_stack
from workers import columnar
from workers.parsers import batches

CHUNK_ROWS = 200_000
BATCH_LINES = 5_000


def chunk(kind: datagen.Kind) -> tuple[bytes, ChunkDescriptor]:
    lines = list(datagen.lines(kind, series=1000, points_per_series=CHUNK_ROWS // 1000))
    lines = lines[1:] if kind == "csv" else lines
    data = ("\n".join(lines) + "\n").encode()
    mapping = Mapping(
        measurement=datagen.MEASUREMENT,
        tag_columns=("host", "region"),
        field_columns=(FieldSpec(name="usage", kind="float"), FieldSpec(name="count", kind="int")),
        time_format="rfc3339" if kind == "csv" else "epoch",
        columns=tuple(datagen.CSV_HEADER.split(",")) if kind == "csv" else (),
    )
    desc = ChunkDescriptor.model_validate(
        {
            "schema_version": 1,
            "job_id": "j",
            "path": f"/x.{kind}",
            "file_size": len(data),
            "file_mtime_ns": 0,
            "chunk_sha256": "0" * 64,
            "start": 0,
            "end": len(data),
            "first_line": 2,
            "line_count": len(lines),
            "format": kind,
            "route": "r",
            "mapping": mapping.model_dump(),
            "precision": "ns" if kind == "csv" else "ms",
        }
    )
    return data, desc


def best_of_3(work: Callable[[bytes, ChunkDescriptor], Any], data: bytes, desc: ChunkDescriptor) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        work(data, desc)
        best = min(best, time.perf_counter() - start)
    return best


def row_path(data: bytes, desc: ChunkDescriptor) -> object:
    return list(batches(data, desc, batch_lines=BATCH_LINES, max_line_bytes=1 << 20))


def columnar_path(data: bytes, desc: ChunkDescriptor) -> object:
    return columnar.batches(data, desc, batch_lines=BATCH_LINES, max_line_bytes=1 << 20)


def per_row() -> None:
    for kind in ("csv", "jsonl"):
        data, desc = chunk(kind)
        rows, cols = (best_of_3(path, data, desc) for path in (row_path, columnar_path))
        ns = 1e9 / CHUNK_ROWS
        print(f"{kind}: row path {rows * ns:.0f} ns/row, columnar {cols * ns:.0f} ns/row, x{rows / cols:.2f}")


def pipeline(rows: int, runs: int) -> None:
    bench.DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = bench.DATA_DIR / f"columnar-{rows}.csv"
    datagen.write(path, "csv", series=1000, points_per_series=rows // 1000)
    stack = start_stack(bench.WORKDIR / "columnar-stack", roots=[bench.DATA_DIR])
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        bench.start_workers(stack)
        for _ in range(runs):
            for on in (False, True):
                bench.restart_workers(stack, columnar=on)
                started = time.perf_counter()
                run = bench.run_pipeline(stack, path, "csv")
                wall = time.perf_counter() - started
                results[on].append((run.points_per_s, run.summary["points"] / wall))
                print(f"columnar={on}: P {run.points_per_s:,.0f} points/s, command {results[on][-1][1]:,.0f}")
    finally:
        for w in stack.workers:
            w.stop(timeout=60)
        stack.stop()
    for on in (False, True):
        p = max(r[0] for r in results[on])
        user = max(r[1] for r in results[on])
        print(f"best, columnar={on}: P {p:,.0f} points/s (first enqueue to last commit), command {user:,.0f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--skip-pipeline", action="store_true")
    args = p.parse_args()
    per_row()
    if not args.skip_pipeline:
        pipeline(args.rows, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
