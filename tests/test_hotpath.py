"""The batch fast path takes a shortcut only where the per-line path would accept every line."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import descriptor_for
from tsbatch.descriptor import ChunkDescriptor
from tsbatch.newlines import nth_newline
from workers.lineprotocol import _LINE_IN_BLOCK, encode_point, valid_block, validate_line
from workers.parsers import batches

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), names
)


@st.composite
def point_lines(draw: st.DrawFn) -> str:
    try:
        line = encode_point(
            draw(names),
            draw(st.dictionaries(names, names, max_size=3)),
            draw(st.dictionaries(names, values, min_size=1, max_size=3)),
            draw(st.integers(-(2**62), 2**62)),
        )
    except ValueError:  # names influxdb_client.Point would write wrongly: refused before this path
        line = None
    return line or "cpu v=1 1"


noise = st.sampled_from(
    [
        "",
        "#c v=1 1",
        "cpu v=1",
        "cpu v=abc 1",
        "cpu v=1 1\r",
        'cpu s="x 1',
        "cpu  v=1 1",
        "cpu v=1i 99999999999999999999",
        "cpu,t= v=1 1",
        "\x00",
    ]
)
lines = st.lists(st.one_of(point_lines(), point_lines(), noise), min_size=1, max_size=30)


@settings(max_examples=400, deadline=None)
@given(lines=lines)
def test_a_block_is_accepted_only_if_every_line_passes_validate_line(lines: list[str]) -> None:
    block = "\n".join(lines)
    if valid_block(block.encode()):
        assert all(validate_line(line) is None for line in block.split("\n"))


# The pattern as Python's engine reads it, possessive quantifiers and lookahead included.
PYTHON_BLOCK = re.compile(rf"{_LINE_IN_BLOCK}(?:\n{_LINE_IN_BLOCK})*+")


@settings(max_examples=400, deadline=None)
@given(lines=lines)
def test_re2_and_pythons_engine_accept_the_same_blocks(lines: list[str]) -> None:
    block = "\n".join(lines)
    assert valid_block(block.encode()) == (PYTHON_BLOCK.fullmatch(block) is not None)


@settings(max_examples=500, deadline=None)
@given(
    buf=st.lists(st.sampled_from([b"\n", b"a", b"bc", b"\n\n", b"xyz" * 30]), max_size=200).map(b"".join),
    start=st.integers(0, 3000),
    n=st.integers(1, 60),
    hint=st.integers(0, 5000),
)
def test_nth_newline_finds_what_a_plain_scan_finds(buf: bytes, start: int, n: int, hint: int) -> None:
    start = min(start, len(buf))
    newlines = [i for i in range(start, len(buf)) if buf[i] == ord("\n")]
    expected = newlines[n - 1] if len(newlines) >= n else len(buf)
    assert nth_newline(buf, start, n, hint=hint) == expected


def _one_by_one(
    data: bytes, desc: ChunkDescriptor, max_line_bytes: int
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The per-line path alone: (number, line) written and (number, reason) refused."""
    kept, refused = [], []
    for number, line in enumerate(data.decode("utf-8").split("\n"), start=desc.first_line):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        too_long = len(line.encode()) > max_line_bytes
        reason = f"line longer than {max_line_bytes} bytes" if too_long else validate_line(line)
        if reason is None:
            kept.append((number, line))
        else:
            refused.append((number, reason))
    return kept, refused


@settings(max_examples=300, deadline=None)
@given(
    lines=lines,
    batch_lines=st.integers(1, 8),
    max_line_bytes=st.sampled_from([1 << 20, 40, 64]),
    final_newline=st.booleans(),
)
def test_the_parser_writes_and_refuses_exactly_what_line_by_line_checking_would(
    lines: list[str], batch_lines: int, max_line_bytes: int, final_newline: bool
) -> None:
    data = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    desc = descriptor_for(data, format="lp", first_line=7)

    got = list(batches(data, desc, batch_lines=batch_lines, max_line_bytes=max_line_bytes))

    written = [(n, line) for b in got for n, line in zip(b.numbers, b.lines(), strict=True)]
    refused = [(r.line, r.reason) for b in got for r in b.rejected]
    assert (written, refused) == _one_by_one(data, desc, max_line_bytes)
