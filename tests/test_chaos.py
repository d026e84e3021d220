"""The chaos scenarios of ``make chaos`` (scripts/chaos.py, docs/RELIABILITY.md) in their short CI form.

Two runs of the script, side by side (their faults are mostly waiting), on 20,000 points a scenario:
the faults of issue #3 (a worker child killed three times mid-chunk, Redis SIGKILLed mid-run, 30% of
writes refused with Retry-After, writes accepted but never answered) and those of issue #8 (the ledger
as outbox: `tsbatch produce` interrupted six times, lost messages, a whole worker killed with the
default visibility timeout, Redis out of memory, a unit that kills its process). Every scenario must
lose nothing, commit no chunk twice, strand no unit and leave no worker stuck, and meet its own
figures; they come from the script's JSON, so a failure names what was measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {
    "issue3": ("child-kill", "redis-restart", "throttled", "ambiguous"),
    "issue8": ("produce-interrupt", "lost-message", "worker-kill", "redis-oom", "poison-kill"),
}
SCENARIOS = tuple(name for names in GROUPS.values() for name in names)
POINTS = 20_000
RUN_TIMEOUT_S = 480

Result = dict[str, Any]


def _start(out: Path, names: tuple[str, ...]) -> subprocess.Popen[str]:
    argv = [sys.executable, "scripts/chaos.py", "--points", str(POINTS), "--quick"]
    argv += ["--out", str(out / "RELIABILITY.md"), "--json", str(out / "results.json")]
    argv += ["--workdir", str(out / "work"), *(f"--scenario={name}" for name in names)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    outs = {group: tmp_path_factory.mktemp(f"chaos-{group}") for group in GROUPS}
    runs = {group: _start(outs[group], names) for group, names in GROUPS.items()}
    by_name: dict[str, Result] = {}
    try:
        for group, proc in runs.items():
            output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
            # 1: a scenario missed a target; each test below says which figure.
            assert proc.returncode in (0, 1), f"scripts/chaos.py crashed:\n{output}"
            results: list[Result] = json.loads((outs[group] / "results.json").read_text())
            report = (outs[group] / "RELIABILITY.md").read_text()
            by_name.update({r["name"]: {**r, "_report": report} for r in results})
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return by_name


def unmet(result: Result) -> list[str]:
    return [f"{c['what']}: {c['detail']}" for c in result["checks"] if not c["ok"]] + result["notes"]


def assert_targets(result: Result) -> None:
    """The issues' targets: nothing lost, nothing committed twice, nothing stranded, no worker stuck."""
    f = result["figures"]
    assert f["lost"] == 0, unmet(result)
    assert f["duplicated"] == 0, unmet(result)
    assert f["committed_twice"] == 0, unmet(result)
    assert f["stranded"] == 0, unmet(result)
    assert f["stuck"] == 0, unmet(result)


def assert_met(result: Result) -> None:
    """The targets, every chunk committed, the scenario's own checks, no unexpected error logged."""
    assert_targets(result)
    assert result["figures"]["missing"] == 0, unmet(result)
    assert result["passed"], unmet(result)


@pytest.mark.timeout(600)
def test_a_worker_child_killed_three_times_mid_chunk_loses_nothing_and_commits_once(
    chaos: dict[str, Result],
) -> None:
    result = chaos["child-kill"]
    assert_met(result)
    assert len(result["faults"]) == 3
    assert all(fault["recovered_s"] is not None for fault in result["faults"])


@pytest.mark.timeout(600)
def test_redis_sigkilled_mid_run_loses_nothing_and_the_workers_consume_again(
    chaos: dict[str, Result],
) -> None:
    result = chaos["redis-restart"]
    assert_targets(result)
    assert result["figures"]["next_commit_s"] is not None  # work went on after Redis came back


@pytest.mark.timeout(600)
def test_chunks_running_when_redis_dies_are_committed_not_dead_lettered(chaos: dict[str, Result]) -> None:
    assert_met(chaos["redis-restart"])


@pytest.mark.timeout(600)
def test_writes_refused_with_retry_after_all_land_and_no_retry_comes_sooner(chaos: dict[str, Result]) -> None:
    result = chaos["throttled"]
    assert_met(result)
    retried = result["extra"]["retry_after"]
    assert retried["retried"] > 0 and retried["early"] == 0


@pytest.mark.timeout(600)
def test_writes_accepted_but_never_answered_land_once_with_one_commit_a_chunk(
    chaos: dict[str, Result],
) -> None:
    result = chaos["ambiguous"]
    assert_met(result)
    assert result["figures"]["committed_once"] == result["figures"]["chunks"]


@pytest.mark.timeout(600)
def test_produce_interrupted_six_times_then_run_again_lands_everything_once(chaos: dict[str, Result]) -> None:
    result = chaos["produce-interrupt"]
    assert_met(result)
    runs = result["extra"]["interrupted_runs"]
    assert len(runs) == 6
    assert {r["signal"] for r in runs} == {"SIGINT", "SIGKILL"}
    assert not any(r["planning_finished"] for r in runs)
    assert result["extra"]["before_rerun"]["units_planned"] > 0  # the kills left work behind
    assert result["extra"]["rerun"]["exit"] == 0


@pytest.mark.timeout(600)
def test_messages_lost_after_their_units_were_recorded_are_published_again_by_the_sweeper(
    chaos: dict[str, Result],
) -> None:
    result = chaos["lost-message"]
    assert_met(result)
    lost = {key for fault in result["faults"] for key in fault["interrupted"]}
    assert len(result["faults"]) == 2 and all(fault["interrupted"] for fault in result["faults"])
    assert result["extra"]["republished_stat"] >= len(lost)
    never_sent, dropped = result["faults"]
    delays = result["extra"]["republish_delay_s"]
    # The queue emptied by its deletion: re-published within republish_after_s 2 + sweep_interval_s 1 + 5.
    assert delays[dropped["what"]] <= 2 + 1 + 5
    # Never-published units wait for the queue to drain (or later units to be claimed) first.
    assert delays[never_sent["what"]] <= 60
    assert all(f["recovered_s"] is not None and f["recovered_s"] <= 60 for f in (never_sent, dropped))


@pytest.mark.timeout(600)
def test_a_killed_worker_chunk_commits_within_lease_and_sweep_with_the_default_visibility_timeout(
    chaos: dict[str, Result],
) -> None:
    result = chaos["worker-kill"]
    assert_met(result)
    extra = result["extra"]
    assert extra["kill_to_commit_bound_s"] == 10 + 5 + 5  # lease_ttl_s + sweep_interval_s + slack
    assert extra["kill_to_republish_s"] is not None and extra["kill_to_republish_s"] <= 20
    assert extra["kill_to_commit_s"] is not None and extra["kill_to_commit_s"] <= 20


@pytest.mark.timeout(600)
def test_redis_out_of_memory_is_logged_rewrites_nothing_in_a_loop_and_everything_lands_after(
    chaos: dict[str, Result],
) -> None:
    result = chaos["redis-oom"]
    assert_met(result)
    oom = result["extra"]["oom"]
    assert oom["oom_refusals_by_redis"] > 0 and oom["refused_logged"] > 0
    assert 0 <= oom["rows_written_while_refused"] <= oom["rows_bound"]


@pytest.mark.timeout(600)
def test_a_unit_that_kills_its_process_is_dead_lettered_as_poison_and_the_rest_lands(
    chaos: dict[str, Result],
) -> None:
    result = chaos["poison-kill"]
    assert_targets(result)
    assert result["passed"], unmet(result)
    f = result["figures"]
    assert f["dead"] == 1 and f["committed_once"] == f["chunks"] - 1
    # Whatever of the poison unit did not land is in the DLQ (its killed attempts' writes may have landed).
    assert f["missing"] == f["dead_samples"]
    assert result["extra"]["poison_entry"]["reason"] == "poison"
    assert result["extra"]["poison_entry"]["attempts"] == "4"  # max_attempts 3, the fourth claim dead-letters
    assert sum(c["killed"] for c in result["extra"]["poison_claims"]) == 3


@pytest.mark.timeout(600)
def test_the_report_is_written_from_the_measurements(chaos: dict[str, Result]) -> None:
    for name in SCENARIOS:
        result = chaos[name]
        report = result["_report"]
        assert "Generated by `scripts/chaos.py" in report
        verdict = "PASS" if result["passed"] else "FAIL"
        row = f"| {result['title']} | 20,000 | 40,000 | {result['figures']['landed']:,} |"
        assert row in report
        assert f"**{verdict}** |" in report
