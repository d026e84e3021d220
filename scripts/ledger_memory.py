"""Redis memory the ledger needs per million chunks, measured (docs/DEPLOY.md quotes the output).

Starts its own redis-server, plans ``--chunks`` chunks with real descriptors (a CSV mapping, a long
path), then claims and commits them, and reads ``used_memory`` at each stage:

    .venv/bin/python scripts/ledger_memory.py [--chunks 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.constants import SCHEMA_VERSION  # noqa: E402
from tsbatch.descriptor import ChunkDescriptor, FieldSpec, Mapping  # noqa: E402
from tsbatch.ledger import Ledger, connect  # noqa: E402
from tsbatch.localstack import start_redis  # noqa: E402


def descriptor(n: int) -> ChunkDescriptor:
    mapping = Mapping(
        measurement="cpu",
        tag_columns=("host", "region"),
        field_columns=(FieldSpec(name="usage"), FieldSpec(name="count", kind="int")),
        columns=("time", "host", "region", "usage", "count"),
    )
    return ChunkDescriptor(
        schema_version=SCHEMA_VERSION,
        job_id="20261202T000000Z-abcdef",
        path=f"/srv/telemetry/site-{n // 1000:04d}/2026-12-01/cpu-{n:08d}.csv",
        file_size=14_000_000,
        file_mtime_ns=1_764_633_600_000_000_000,
        chunk_sha256=f"{n:064x}",
        start=n * 14_000_000,
        end=(n + 1) * 14_000_000,
        first_line=n * 200_000 + 2,
        line_count=200_000,
        format="csv",
        mapping=mapping,
        route="hot",
        precision="ns",
    ).with_key()


def used(book: Ledger) -> int:
    return int(book.redis.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_redis(Path(tmp))
        try:
            book = Ledger(connect(f"redis://127.0.0.1:{proc.port}/0"), prefix="tsbatch")
            base = used(book)
            job = "20261202T000000Z-abcdef"
            book.create_job(job, route="hot", paths=["/srv/telemetry"])
            keys = []
            for n in range(args.chunks):
                desc = descriptor(n)
                keys.append(desc.key)
                book.plan(desc.key, job, descriptor=json.dumps(desc.to_message()))
            planned = used(book)
            for key in keys:
                claim = book.claim(key, worker="node-1:12345", lease_ttl_s=60, max_attempts=12, descriptor="")
                record: dict[str, str | int | float] = {
                    "points": 400_000,
                    "bytes": 14_000_000,
                    "sha256": "f" * 64,
                    "path": "/srv/telemetry/site-0001/2026-12-01/cpu-00000001.csv",
                    "first_line": 2,
                    "rejected": 0,
                    "worker": "node-1:12345",
                    "started_ms": 1_764_633_600_000,
                    "duration_ms": 512,
                    "failures": 0,
                    "attempts": 1,
                    "read_ms": 10,
                    "encode_ms": 400,
                    "write_ms": 100,
                }
                common = {"job": job, "key": key, "path": "/p", "route": "hot"}
                book.commit(key, claim.holder, record=record, rejected=[], dlq_common=common)
            committed = used(book)
        finally:
            proc.stop()
    per_million = 1_000_000 / args.chunks / 2**20
    print(f"chunks: {args.chunks:,}")
    for stage, at in (("planned, in the outbox with its descriptor", planned), ("committed", committed)):
        print(f"{stage}: {(at - base) * per_million:,.0f} MiB per million chunks")


if __name__ == "__main__":
    main()
