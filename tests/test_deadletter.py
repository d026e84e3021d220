"""The dead-letter queue keeps what could not be written, says why, and replays it exactly once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli, expected, landed
from tsbatch import datagen
from tsbatch.localstack import vm_rows_inserted


def _dlq(stack, job: str) -> list[dict[str, str]]:
    out = cli(stack, "dlq", "list", "--job", job, "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_a_route_refusing_the_token_dead_letters_its_chunks_without_a_request_storm(
    make_stack, fault_proxy, data_dir: Path
) -> None:
    stack = make_stack(producer={"chunk_lines": 1_000})
    vm = stack.routes["default"].url
    proxy = fault_proxy(vm, token="the-right-token")  # the stack's route sends another token
    stack.point_route("default", proxy.url)
    worker = stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=100)  # two chunks

    done = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")

    assert done.returncode == 1
    summary = json.loads(done.stdout.splitlines()[-1])
    assert (summary["dead"], summary["committed"], summary["points"]) == (2, 0, 0)
    entries = _dlq(stack, summary["job"])
    assert [e["reason"] for e in entries] == ["route_rejected", "route_rejected"]
    assert all("route default: 401" in e["message"] and e["path"] == str(src) for e in entries)
    assert len(proxy.requests()) == 2  # one refused write per chunk, then nothing more
    assert "local-token" not in json.dumps(entries)  # secrets never reach the DLQ

    worker.stop()
    stack.point_route("default", vm)
    stack.start_worker()
    replay = cli(stack, "dlq", "replay", "--job", summary["job"], "--wait")

    assert replay.returncode == 0, replay.stderr
    assert landed(vm) == expected(20, 100)
    assert _dlq(stack, summary["job"]) == []
    again = cli(stack, "dlq", "replay", entries[0]["id"])
    assert again.returncode != 0 and "no dead-letter entry" in again.stderr
    assert vm_rows_inserted(vm) == 2 * 2_000


def test_rejected_lines_can_be_shown_exported_and_purged(make_stack, data_dir: Path) -> None:
    stack = make_stack()
    stack.start_worker()
    src = data_dir / "bad.lp"
    src.write_text("cpu,host=a usage=1 1704067200000000000\ncpu,host=a usage=oops 1704067201000000000\n")
    job = json.loads(
        cli(stack, "produce", str(src), "--route", "default", "--wait", "--json").stdout.splitlines()[-1]
    )["job"]

    [entry] = _dlq(stack, job)
    shown = json.loads(cli(stack, "dlq", "show", entry["id"]).stdout)
    exported = cli(stack, "dlq", "export", "--job", job).stdout
    purged = cli(stack, "dlq", "purge", "--job", job, "--yes")

    assert shown["line"] == "2" and "usage" in shown["message"]
    assert exported == "cpu,host=a usage=oops 1704067201000000000\n"
    assert "purged 1" in purged.stdout and _dlq(stack, job) == []


def test_messages_the_worker_must_refuse_are_dead_lettered_and_the_worker_keeps_consuming(
    make_stack, data_dir: Path
) -> None:
    import pickle

    from kombu import Connection, Exchange, Queue

    from tests.conftest import wait_for
    from tsbatch.ledger import Ledger, connect

    stack = make_stack()
    stack.start_worker()
    queue = Queue("tsbatch.chunks", Exchange("tsbatch.chunks", "direct"), "tsbatch.chunks")
    with Connection(stack.redis_url) as conn:
        producer = conn.Producer()
        producer.publish(
            pickle.dumps({"boom": True}),
            exchange=queue.exchange,
            routing_key="tsbatch.chunks",
            declare=[queue],
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "tsbatch.ingest_chunk", "id": "poison-1"},
        )
        producer.publish(
            {"args": []},
            exchange=queue.exchange,
            routing_key="tsbatch.chunks",
            declare=[queue],
            serializer="json",
            headers={"task": "someone.elses_task", "id": "stray-1"},
        )
    book = Ledger(connect(stack.redis_url), prefix="tsbatch")

    entries = wait_for(lambda: len(got := list(book.dead_letters())) == 2 and got, what="two dead letters")

    assert sorted(e.get("reason") for e in entries) == ["undecodable_message", "unknown_task"]
    refused = next(e for e in entries if e.get("reason") == "undecodable_message")
    assert refused.get("content_type") == "application/x-python-serialize"
    assert "ContentDisallowed" in refused.get("message")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=2, points_per_series=5)
    after = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json")
    assert after.returncode == 0 and json.loads(after.stdout.splitlines()[-1])["points"] == 10


def test_rejected_lines_reach_the_terminal_with_their_control_characters_escaped(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack()
    stack.start_worker()
    src = data_dir / "colour.lp"
    hostile = "cpu,host=a usage=\x1b[31moops\x9b2J 1704067201000000000"
    ordinary = "cpu,host=é\\ b\tusage=nope 1704067202000000000"  # printable UTF-8, a backslash, a tab
    src.write_text(f"cpu,host=a usage=1 1704067200000000000\n{hostile}\n{ordinary}\n")
    job = json.loads(
        cli(stack, "produce", str(src), "--route", "default", "--wait", "--json").stdout.splitlines()[-1]
    )["job"]

    exported = cli(stack, "dlq", "export", "--job", job).stdout
    listed = cli(stack, "dlq", "list", "--job", job).stdout
    as_json = _dlq(stack, job)

    assert exported.splitlines() == ["cpu,host=a usage=\\x1b[31moops\\x9b2J 1704067201000000000", ordinary]
    assert "\x1b" not in listed and "\x9b" not in listed and len(listed.splitlines()) == 2
    assert "\x1b" not in cli(stack, "dlq", "list", "--job", job, "--json").stdout
    assert sorted(e["raw"] for e in as_json) == sorted([hostile, ordinary])  # JSON keeps them, escaped
