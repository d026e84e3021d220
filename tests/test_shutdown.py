"""SIGTERM drains: the chunk in hand is finished and committed, the rest waits for the next worker."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import cli, expected, landed, ledger, wait_for
from tsbatch import datagen
from tsbatch.localstack import vm_rows_inserted


def test_sigterm_finishes_the_chunk_in_flight_and_a_new_worker_takes_the_rest(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(
        producer={"chunk_lines": 2_000, "taper": False},  # three equal chunks
        worker={"batch_lines": 250, "writes_in_flight": 1},
    )
    proxy = fault_proxy(stack.routes["default"].url)
    proxy.set_faults([{"mode": "slow", "delay_s": 0.3}])  # ~2.4 s a chunk
    stack.point_route("default", proxy.url)
    first = stack.start_worker(name="first")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=300)  # three chunks
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    book = ledger(stack)
    wait_for(lambda: len(proxy.requests()) >= 2, what="the first writes")

    code = first.stop(signal.SIGTERM, timeout=60)

    assert code == 0
    in_hand = book.job(job)
    assert in_hand.committed >= 1 and book.stats().get("commit_fenced", 0) == 0
    stack.start_worker(name="second")
    done = wait_for(lambda: (s := book.job(job)).done and s, what="the job")
    assert (done.committed, done.dead, done.points) == (3, 0, 6_000)
    assert landed(stack.routes["default"].url) == expected(20, 300)
    assert vm_rows_inserted(stack.routes["default"].url) == 12_000  # nothing was written twice
