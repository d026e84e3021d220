"""A source is opened once, beneath a root, and read through that descriptor: no symlink, FIFO, device
or directory gets in, and nothing swapped in after planning is read (issue #8)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import cli, ledger, wait_for
from tsbatch import datagen
from tsbatch.errors import SourceError
from tsbatch.localstack import vm_rows_inserted
from tsbatch.sources import Source, open_source


def _refusal(path: Path, roots: list[Path]) -> SourceError:
    """The SourceError ``open_source`` raises, from a thread given 5 s: a FIFO must not block it."""
    outcome: list[BaseException | Source] = []

    def attempt() -> None:
        try:
            with open_source(path, roots) as src:
                outcome.append(src)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert outcome, f"open_source({path}) blocked"
    [error] = outcome
    assert isinstance(error, SourceError), error
    return error


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.lp").write_bytes(b"secret 1\n")
    return tmp_path / "root"


def test_a_regular_file_beneath_a_root_is_opened_once_and_read_by_its_descriptor(root: Path) -> None:
    src_path = root / "sub" / "f.lp"
    src_path.write_bytes(b"a 1\nb 2\n")
    digest = hashlib.sha256(b"b 2\n").hexdigest()

    with open_source(str(root / "sub" / ".." / "sub" / "f.lp"), [root]) as src:
        src_path.unlink()  # whatever happens to the name now, the descriptor reads what was opened
        (root / "sub" / "f.lp").write_bytes(b"changed\n")
        data = src.read_range(4, 8, sha256=digest, first_line=2)
        with pytest.raises(SourceError, match="changed since planning") as changed:
            src.read_range(0, 4, sha256=digest, first_line=1)

    assert data == b"b 2\n" and src.path == src_path and src.size == 8
    assert changed.value.reason == "source_changed"


def test_a_root_named_through_a_symlink_still_confines_to_its_real_directory(root: Path) -> None:
    (root / "f.lp").write_bytes(b"a 1\n")
    alias = root.parent / "alias"
    alias.symlink_to(root)

    with open_source(alias / "f.lp", [alias]) as via_alias, open_source(root / "f.lp", [alias]) as real:
        assert via_alias.path == real.path == root / "f.lp"


def test_a_final_symlink_is_refused_wherever_it_points(root: Path) -> None:
    (root / "f.lp").write_bytes(b"a 1\n")
    (root / "inside.lp").symlink_to(root / "f.lp")
    (root / "leak.lp").symlink_to(root.parent / "outside" / "secret.lp")

    for name in ("inside.lp", "leak.lp"):
        error = _refusal(root / name, [root])
        assert error.reason == "symlink" and "symbolic link" in str(error)


def test_a_symlinked_directory_leading_outside_the_root_is_refused(root: Path) -> None:
    (root / "sub" / "away").symlink_to(root.parent / "outside")

    error = _refusal(root / "sub" / "away" / "secret.lp", [root])

    assert error.reason == "symlink"
    assert str(error) == f"{root}/sub/away/secret.lp: {root}/sub/away is a symbolic link (not followed)"


def test_paths_outside_the_roots_relative_or_missing_are_refused_by_name(root: Path) -> None:
    cases = {
        root / ".." / "outside" / "secret.lp": "outside_roots",
        root.parent / "outside" / "secret.lp": "outside_roots",
        Path("root/sub/f.lp"): "relative_path",
        root / "sub" / "missing.lp": "not_found",
    }
    for path, reason in cases.items():
        assert _refusal(path, [root]).reason == reason, path
    assert "outside the source roots" in str(_refusal(root.parent / "outside" / "secret.lp", [root]))


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(root: Path) -> None:
    os.mkfifo(root / "sub" / "pipe.lp")

    error = _refusal(root / "sub" / "pipe.lp", [root])

    assert error.reason == "not_a_file" and str(error) == f"{root}/sub/pipe.lp: not a regular file"


def test_a_directory_or_a_device_is_not_a_file(root: Path) -> None:
    (root / "dev").symlink_to("/dev")

    assert _refusal(root / "sub", [root]).reason == "not_a_file"
    assert _refusal(root, [root]).reason == "not_a_file"
    assert _refusal(root / "dev" / "zero", [root]).reason == "symlink"
    assert _refusal(Path("/dev/zero"), [Path("/dev")]).reason == "not_a_file"


def test_a_directory_swapped_for_a_symlink_after_planning_is_dead_lettered_and_not_read(
    make_stack, data_dir: Path, tmp_path: Path
) -> None:
    stack = make_stack()
    (data_dir / "site").mkdir()
    src = data_dir / "site" / "p.lp"
    datagen.write(src, "lp", series=2, points_per_series=5)
    produced = cli(stack, "produce", str(src), "--route", "default")  # no worker yet: planned, queued
    job = produced.stdout.splitlines()[0]
    assert produced.returncode == 0 and ledger(stack).job(job).units == 1, produced.stderr

    # The same bytes outside the roots: read, they would pass the chunk's SHA-256 check.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(data_dir / "site", elsewhere)
    (data_dir / "site").symlink_to(elsewhere)
    stack.start_worker()

    [entry] = wait_for(lambda: list(ledger(stack).dead_letters(job_id=job)), what="the dead letter")
    assert entry.get("reason") == "symlink"
    assert f"{data_dir}/site is a symbolic link (not followed)" in entry.get("message")
    assert ledger(stack).job(job).committed == 0
    assert vm_rows_inserted(stack.routes["default"].url) == 0


def test_a_fifo_given_to_produce_is_refused_in_one_line_and_a_fifo_descriptor_does_not_block_the_worker(
    make_stack, data_dir: Path
) -> None:
    stack = make_stack()
    stack.start_worker()
    src = data_dir / "p.lp"
    datagen.write(src, "lp", series=2, points_per_series=5)
    fifo = data_dir / "pipe.lp"
    os.mkfifo(fifo)

    produced = cli(stack, "produce", str(fifo), "--route", "default", timeout=60)

    rejected = [line for line in produced.stderr.splitlines() if line.startswith("rejected:")]
    assert rejected == [f"rejected: {fifo}: {fifo}: not a regular file"]

    # A descriptor naming a FIFO (as anyone who can write to the queue could send), then a good file:
    # the worker dead-letters the first at once and goes on with the second.
    from tests.test_exactly_once import _descriptors, _send

    planned = data_dir / "r.lp"
    datagen.write(planned, "lp", series=1, points_per_series=2)
    [desc] = _descriptors(stack, planned)
    planned.unlink()
    os.mkfifo(planned)
    _send(stack, desc)
    after = cli(stack, "produce", str(src), "--route", "default", "--wait", "--json", timeout=60)

    [entry] = wait_for(lambda: list(ledger(stack).dead_letters(job_id=desc.job_id)), what="the dead letter")
    assert entry.get("reason") == "not_a_file" and entry.get("message") == f"{planned}: not a regular file"
    assert after.returncode == 0 and json.loads(after.stdout.splitlines()[-1])["points"] == 10
