"""The batch fast path takes a shortcut only where the per-line path would accept every line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import descriptor_for
from tsbatch.descriptor import ChunkDescriptor
from workers.lineprotocol import encode_point, valid_block, validate_line
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
    if valid_block(block):
        assert all(validate_line(line) is None for line in block.split("\n"))


def _one_by_one(data: bytes, desc: ChunkDescriptor) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """The per-line path alone: (number, line) written and (number, reason) refused."""
    kept, refused = [], []
    for number, line in enumerate(data.decode("utf-8").split("\n"), start=desc.first_line):
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        reason = validate_line(line)
        if reason is None:
            kept.append((number, line))
        else:
            refused.append((number, reason))
    return kept, refused


@settings(max_examples=300, deadline=None)
@given(lines=lines, batch_lines=st.integers(1, 8))
def test_the_parser_writes_and_refuses_exactly_what_line_by_line_checking_would(
    lines: list[str], batch_lines: int
) -> None:
    data = "\n".join(lines).encode()
    desc = descriptor_for(data, format="lp", first_line=7)

    got = list(batches(data, desc, batch_lines=batch_lines, max_line_bytes=1 << 20))

    written = [(n, line) for b in got for n, line in zip(b.numbers, b.lines, strict=True)]
    refused = [(r.line, r.reason) for b in got for r in b.rejected]
    assert (written, refused) == _one_by_one(data, desc)
