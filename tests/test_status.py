"""`tsbatch status` without a job: the system's live view, as JSON and in a real terminal (tmux)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli, wait_for
from tsbatch import datagen

pytestmark = pytest.mark.timeout(300)


def _running_job(make_stack: Any, fault_proxy: Any, data_dir: Path) -> tuple[Any, str]:
    stack = make_stack(producer={"chunk_lines": 500, "taper": False}, worker={"batch_lines": 250})
    proxy = fault_proxy(stack.routes["default"].url)
    proxy.set_faults([{"mode": "slow", "delay_s": 0.3}])
    stack.point_route("default", proxy.url)
    stack.settings["jobs"] = {
        "cpu_5m": {
            "kind": "downsample",
            "source": "default",
            "target": "other",
            "measurement": "cpu",
            "every": "5m",
            "aggregates": ["mean"],
        }
    }
    stack.settings["routes"]["other"] = {**stack.settings["routes"]["default"], "bucket": "other"}
    stack.write_config()
    stack.start_worker(concurrency=2, name="nodeA")
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=20, points_per_series=500)  # 20 chunks of slow writes
    job = cli(stack, "produce", str(src), "--route", "default").stdout.split()[0]
    return stack, job


def test_status_json_shows_the_running_job_routes_nodes_and_windows(
    make_stack: Any, fault_proxy: Any, data_dir: Path
) -> None:
    stack, job = _running_job(make_stack, fault_proxy, data_dir)
    wait_for(
        lambda: json.loads(cli(stack, "status", job, "--json").stdout)["committed"] >= 1, what="progress"
    )
    snap = json.loads(cli(stack, "status", "--json").stdout)
    [view] = [j for j in snap["jobs"] if j["job"] == job]
    assert view["units"] == 20 and 1 <= view["committed"] <= 20 and view["planning"] in ("running", "done")
    assert view["points_per_s"] >= 0
    assert {r["route"] for r in snap["routes"]} == {"default", "other"}
    [node] = snap["nodes"]
    assert node["node"].startswith("nodeA@") and node["processes"] == 2 and not node["silent"]
    assert snap["windows"] == [{"job": "cpu_5m", "watermark": None, "due": None}]
    done = cli(stack, "status", job, "--watch", "--json", timeout=240)
    assert json.loads(done.stdout.splitlines()[-1])["committed"] == 20


def test_status_renders_live_in_a_real_terminal(make_stack: Any, fault_proxy: Any, data_dir: Path) -> None:
    stack, job = _running_job(make_stack, fault_proxy, data_dir)
    session = f"tsbatch-status-{int(time.time() * 1000)}"
    env = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in stack.env().items() if k.startswith(("TSBATCH", "PATH"))
    )
    command = f"env {env} {' '.join(map(shlex.quote, stack.tsbatch('status')))}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "40", f"{command}; sleep 600"],
        check=True,
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
            ).stdout

        def live() -> str:
            text = screen()
            return text if job in text and "nodeA@" in text else ""

        try:
            text = wait_for(live, timeout=60, what="the live view")
        except AssertionError:
            raise AssertionError(f"the live view never showed {job}:\n{screen()}") from None
        for title in ("jobs", "routes", "worker nodes", "scheduled windows", "queue"):
            assert title in text
        (stack.workdir / "status-screen.txt").write_text(text)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
