"""``tsbatch buckets plan | apply`` against the fault-injection server's orgs and buckets API.

No InfluxDB 2 can run here: these tests check the requests sent and the answers understood against a
server that follows the documented API (tests/faultbuckets.py), not against InfluxDB itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load_settings
from tests.faultserver import FaultServer
from tsbatch.localstack import to_toml

TOKEN = "bucket-admin-token-7f3a"
DAY = 86_400
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    # No upstream: nothing is written through this server.
    with FaultServer.start("http://127.0.0.1:9", token=TOKEN, orgs=["acme"]) as fs:
        yield fs


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def buckets(tmp_path: Path, server: FaultServer) -> Callable[..., Run]:
    """``buckets(**declarations)`` writes a settings file; ``run(*args)`` then runs ``tsbatch buckets``."""
    token_file = tmp_path / "influx-token"
    token_file.write_text(TOKEN + "\n")

    def declare(routes: dict[str, Any] | None = None, **declared: dict[str, Any]) -> Run:
        settings = {
            "routes": {
                "warm": {"url": server.url, "org": "acme", "bucket": "warm", "token_file": str(token_file)},
                "cold": {"url": server.url, "org": "acme", "bucket": "cold", "token": TOKEN},
                **(routes or {}),
            },
            "buckets": declared,
        }
        config = tmp_path / "tsbatch.toml"
        config.write_text(to_toml(settings))

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TSBATCH_")}
            env["TSBATCH_CONFIG"] = str(config)
            return subprocess.run(
                [sys.executable, "-m", "tsbatch.cli", "buckets", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        return run

    return declare


def rows(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}


def changes(server: FaultServer) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in server.admin_requests() if r["method"] in ("POST", "PATCH")]


def on_server(server: FaultServer) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in server.buckets()}


def test_plan_on_an_empty_server_lists_creates_and_changes_nothing(buckets, server: FaultServer) -> None:
    run = buckets(
        warm={"route": "warm", "retention": "30d", "description": "warm data"}, cold={"route": "cold"}
    )

    done = run("plan", "--json")

    assert done.returncode == 0, done.stderr
    plans = rows(done)
    assert {n: p["action"] for n, p in plans.items()} == {"warm": "create", "cold": "create"}
    assert plans["warm"]["changes"]["retention"] == {"server": None, "settings": 30 * DAY}
    assert plans["warm"]["changes"]["shard_group"] == {"server": None, "settings": DAY}  # InfluxDB's default
    assert "2 to create" in done.stderr
    assert changes(server) == [] and server.buckets() == []
    text = run("plan").stdout
    assert 'warm: would create bucket "warm" in org acme' in text and "retention 30d, shard group 1d" in text


def test_apply_creates_with_the_documented_body_and_confirms_by_reading_back(
    buckets, server: FaultServer
) -> None:
    run = buckets(
        warm={"route": "warm", "retention": "30d", "description": "warm data"}, cold={"route": "cold"}
    )

    done = run("apply")

    assert done.returncode == 0, done.stderr
    assert "2 created" in done.stderr
    posts = [json.loads(r["body"]) for r in server.admin_requests() if r["method"] == "POST"]
    org_id = posts[0]["orgID"]
    assert sorted(posts, key=lambda b: b["name"]) == [
        {"orgID": org_id, "name": "cold", "description": "", "retentionRules": []},  # for ever
        {
            "orgID": org_id,
            "name": "warm",
            "description": "warm data",
            "retentionRules": [{"type": "expire", "everySeconds": 30 * DAY}],  # shard group: the server's
        },
    ]
    made = on_server(server)
    assert made["warm"]["retentionRules"] == [
        {"type": "expire", "everySeconds": 30 * DAY, "shardGroupDurationSeconds": DAY}
    ]
    assert made["cold"]["retentionRules"][0]["everySeconds"] == 0
    # Each create is confirmed by a GET of the new bucket's ID.
    gets = [r["path"] for r in server.admin_requests() if r["method"] == "GET"]
    assert {f"/api/v2/buckets/{b['id']}" for b in made.values()} <= set(gets)
    assert {p["action"] for p in rows(run("plan", "--json")).values()} == {"same"}


def test_apply_twice_changes_nothing_the_second_time_and_says_so(buckets, server: FaultServer) -> None:
    run = buckets(warm={"route": "warm", "retention": "30d"}, cold={"route": "cold", "shard_group": "1d"})
    assert run("apply").returncode == 0
    before = on_server(server)
    server.clear_admin_requests()

    again = run("apply")

    assert again.returncode == 0, again.stderr
    assert "nothing to change: every bucket is as declared" in again.stderr
    assert "warm: unchanged" in again.stdout and "cold: unchanged" in again.stdout
    assert changes(server) == []  # no POST, no PATCH
    assert on_server(server) == before


def test_a_changed_retention_is_planned_as_an_update_then_patched_and_read_back(
    buckets, server: FaultServer
) -> None:
    assert buckets(warm={"route": "warm", "retention": "30d"})("apply").returncode == 0
    run = buckets(warm={"route": "warm", "retention": "90d", "description": "three months"})
    server.clear_admin_requests()

    plan = rows(run("plan", "--json"))["warm"]

    assert plan["action"] == "update"
    assert plan["changes"] == {
        "retention": {"server": 30 * DAY, "settings": 90 * DAY},
        "description": {"server": "", "settings": "three months"},
    }
    assert changes(server) == []

    done = run("apply")

    assert done.returncode == 0, done.stderr
    assert "warm: updated" in done.stdout and "retention 30d -> 90d" in done.stdout
    bucket_id = on_server(server)["warm"]["id"]
    patches = [r for r in server.admin_requests() if r["method"] == "PATCH"]
    assert [p["path"] for p in patches] == [f"/api/v2/buckets/{bucket_id}"]
    assert json.loads(patches[0]["body"]) == {
        "retentionRules": [{"type": "expire", "everySeconds": 90 * DAY, "shardGroupDurationSeconds": DAY}],
        "description": "three months",
    }
    after = [r for r in server.admin_requests() if r["id"] > patches[0]["id"]]
    assert [(r["method"], r["path"]) for r in after] == [("GET", f"/api/v2/buckets/{bucket_id}")]
    assert on_server(server)["warm"]["retentionRules"][0]["everySeconds"] == 90 * DAY
    assert run("apply").returncode == 0 and len(changes(server)) == 1  # and now nothing more


def test_shortening_a_forever_bucket_sends_the_new_default_shard_group(buckets, server: FaultServer) -> None:
    # A for-ever bucket has 7-day shard groups; InfluxDB refuses a 1-day retention unless the shard
    # group shrinks with it ("shard-group duration must also be updated ..."), so the PATCH carries it.
    assert buckets(cold={"route": "cold"})("apply").returncode == 0
    done = buckets(cold={"route": "cold", "retention": "1d"})("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "shard group 7d -> 1h" in done.stdout
    assert on_server(server)["cold"]["retentionRules"] == [
        {"type": "expire", "everySeconds": DAY, "shardGroupDurationSeconds": 3600}
    ]
    # And back to for ever: everySeconds 0 (an empty rule list would change nothing on a PATCH).
    done = buckets(cold={"route": "cold"})("apply")
    assert done.returncode == 0, done.stdout + done.stderr
    last = [json.loads(r["body"]) for r in server.admin_requests() if r["method"] == "PATCH"][-1]
    assert last["retentionRules"] == [
        {"type": "expire", "everySeconds": 0, "shardGroupDurationSeconds": 7 * DAY}
    ]


def test_a_victoriametrics_route_is_skipped_and_the_other_buckets_are_applied(
    buckets, server: FaultServer
) -> None:
    vm = {
        "vm": {
            "kind": "victoriametrics",
            "url": "http://127.0.0.1:9",
            "org": "x",
            "bucket": "vm",
            "token": "",
        }
    }
    run = buckets(
        routes=vm, raw={"route": "vm", "retention": "7d"}, warm={"route": "warm", "retention": "30d"}
    )

    plan, done = run("plan"), run("apply")

    for out in (plan, done):
        assert out.returncode == 0, out.stderr
        assert "raw: skipped: route vm is victoriametrics, which has no buckets" in out.stdout
    assert "warm: created" in done.stdout and "1 skipped, 0 failed" in done.stderr
    assert set(on_server(server)) == {"warm"}


def test_a_refused_token_is_reported_per_bucket_without_printing_it(buckets, server: FaultServer) -> None:
    run = buckets(warm={"route": "warm", "retention": "30d"}, cold={"route": "cold"})
    server.set_token("a-rotated-token")

    for args in (("plan",), ("apply",), ("apply", "--json")):
        done = run(*args)
        assert done.returncode == 1
        assert TOKEN not in done.stdout + done.stderr
        assert "2 failed" in done.stderr
    text = run("apply").stdout
    assert "warm: lookup failed:" in text
    assert "GET /api/v2/orgs: 401 unauthorized: unauthorized access (the route's token was refused)" in text
    assert changes(server) == [] and server.buckets() == []


def test_an_org_that_does_not_exist_fails_its_buckets_only(buckets, server: FaultServer) -> None:
    other = {"other": {"url": server.url, "org": "nope", "bucket": "b", "token": TOKEN}}
    done = buckets(routes=other, lost={"route": "other"}, warm={"route": "warm", "retention": "30d"})("apply")

    assert done.returncode == 1
    assert "lost: lookup failed:" in done.stdout and "no organization named 'nope'" in done.stdout
    assert "warm: created" in done.stdout
    assert "1 created" in done.stderr and "1 failed" in done.stderr


def test_a_refused_create_is_reported_with_the_servers_message(buckets, server: FaultServer) -> None:
    # A name InfluxDB reserves for its system buckets.
    system = {"sys": {"url": server.url, "org": "acme", "bucket": "_tasks", "token": TOKEN}}
    done = buckets(routes=system, tasks={"route": "sys", "retention": "3d"})("apply", "--json")

    assert done.returncode == 1
    row = rows(done)["tasks"]
    assert (row["action"], row["outcome"]) == ("create", "failed")
    assert "POST /api/v2/buckets: 400 invalid: bucket name _tasks is invalid" in row["message"]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"route": "warm", "retention": "30m"}, "buckets.warm: retention: InfluxDB keeps data at least 1h"),
        (
            {"route": "warm", "retention": "1d", "shard_group": "2d"},
            "shard_group: must not be longer than the retention",
        ),
        ({"route": "nowhere"}, "buckets.warm.route: unknown route 'nowhere'"),
    ],
)
def test_declarations_influxdb_would_refuse_stop_at_load(declared: dict[str, Any], message: str) -> None:
    route = {"url": "http://influx:8086", "org": "acme", "bucket": "warm", "token": "t"}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(routes={"warm": route}, buckets={"warm": declared})


def test_two_declarations_of_one_bucket_stop_at_load() -> None:
    route = {"url": "http://influx:8086", "org": "acme", "bucket": "warm", "token": "t"}
    with pytest.raises(ConfigError, match=r"buckets\.b: declares the same bucket as buckets\.a"):
        load_settings(
            routes={"warm": route, "warm2": route}, buckets={"a": {"route": "warm"}, "b": {"route": "warm2"}}
        )
