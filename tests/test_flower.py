"""``tsbatch flower`` lets in the configured credential and nothing else, whatever its password holds."""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import wait_for


def _status(url: str, credential: str | None) -> int:
    request = urllib.request.Request(url)
    if credential is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(credential.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_password_with_a_comma_logs_in_whole_and_its_fragments_do_not(make_stack) -> None:
    stack = make_stack()
    flower = stack.start_flower(user="admin", password="pa,ss:word")
    url = f"{flower.url}/api/workers"

    # The page answers at all once Flower is past its start (401 without a credential).
    wait_for(lambda: _status(url, None) == 401, timeout=60, what="flower to answer")
    assert _status(url, "admin:pa,ss:word") == 200
    # FLOWER_BASIC_AUTH split on commas made "admin:pa" and "ss:word" two credentials that logged in.
    assert _status(url, "ss:word") == 401
    assert _status(url, "admin:pa") == 401
    assert _status(url, "admin:wrong") == 401
    assert "pa,ss" not in _cmdline(flower.proc.pid)


def test_flower_refuses_a_user_with_a_colon_or_a_password_it_could_never_compare(make_stack) -> None:
    stack = make_stack()
    cases = {
        ("ad:min", "secret"): "flower.user: must not contain ':'",
        ("admin", "pässword"): "flower.password: printable ASCII characters only",
        ("admin", ""): "flower.password: required",
    }
    for (user, password), message in cases.items():
        env = {**stack.env(), "TSBATCH_FLOWER__USER": user, "TSBATCH_FLOWER__PASSWORD": password}
        run = subprocess.run(
            stack.tsbatch("flower", "--port", "1"), env=env, capture_output=True, text=True, timeout=60
        )
        [line] = run.stderr.splitlines()
        assert run.returncode != 0 and line.startswith(f"Error: configuration: {message}"), run.stderr
