"""The Flux tsbatch sends (tsbatch/flux.py, config/flux/*.flux), checked by InfluxData's own Flux parser
and type checker (tests/flux/parse.mjs, the WebAssembly build in npm ``@influxdata/flux-lsp-browser``).

No InfluxDB 2 can run here, so no query is executed: the goldens say what is sent, the parser says it
is valid Flux, and the AST says that hostile text in any user-supplied value stays one string value.
``TSBATCH_UPDATE_GOLDEN=1 pytest tests/test_flux.py`` rewrites the goldens (review the diff).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.faultserver import FaultServer
from tsbatch.flux import (
    flux_column,
    flux_duration,
    flux_string,
    flux_time,
    render_copy,
    render_downsample,
    render_read,
)
from tsbatch.windows import Definition

pytestmark = pytest.mark.timeout(300)

FLUX_DIR = Path(__file__).parent / "flux"
GOLDEN = FLUX_DIR / "golden"
PARSER_WASM = FLUX_DIR / "node_modules" / "@influxdata" / "flux-lsp-browser" / "flux-lsp-browser_bg.wasm"
UPDATE_GOLDEN = os.environ.get("TSBATCH_UPDATE_GOLDEN") == "1"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
ALL_AGGREGATES = ("mean", "min", "max", "count", "sum", "first", "last", "stddev", "p50", "p90", "p95", "p99")

Checked = dict[str, Any]  # {"errors": [{kind, line, column, message}], "ast": {...}}


# --------------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def check_flux() -> Callable[[list[str]], list[Checked]]:
    """Check Flux sources with the real parser: one Node process per call, whatever the number."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js and npm are needed to check Flux: `make setup` installs nodejs and npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.fail(f"tests/flux/parse.mjs needs Node.js 18 or newer, {node} is {version.strip()}")
    if not PARSER_WASM.exists():
        # package-lock.json pins the package and its checksum; npm ci installs exactly that.
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=FLUX_DIR, check=True, timeout=240)

    def check(sources: list[str]) -> list[Checked]:
        done = subprocess.run(
            [node, str(FLUX_DIR / "parse.mjs"), "--json"],
            input=json.dumps(sources),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        results: list[Checked] = json.loads(done.stdout)
        assert len(results) == len(sources)
        return results

    return check


def walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from walk(item)
    elif isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)


def shape(node: object) -> object:
    """The AST without positions and with every string's value replaced: its structure only."""
    if isinstance(node, list):
        return [shape(item) for item in node]
    if isinstance(node, dict):
        if node.get("type") == "StringLiteral":
            return "<string>"
        return {key: shape(value) for key, value in node.items() if key != "location"}
    return node


def string_values(ast: object) -> list[str]:
    return [node["value"] for node in walk(ast) if node.get("type") == "StringLiteral"]


# --------------------------------------------------------------------------------------------------
# Goldens
# --------------------------------------------------------------------------------------------------


def definition(kind: str = "downsample", **overrides: Any) -> Definition:
    values: dict[str, Any] = {
        "kind": kind,
        "source": "raw",
        "target": "rollup",
        "measurement": "cpu",
        "fields": ("usage", "temp"),
        "tags": {"host": "edge-1", "region": "eu"},
        "every": 300,
        "aggregates": ALL_AGGREGATES if kind == "downsample" else (),
        "mode": "server",
        "output_measurement": "cpu_5m" if kind == "downsample" else "cpu",
    }
    values.update(overrides)
    return Definition.model_validate(values)


ROUTES = {"bucket": "telemetry", "target_bucket": "telemetry_5m", "org": "acme"}
WINDOW = (T0, T0 + 300)

GOLDENS: dict[str, Callable[[], str]] = {
    "read": lambda: render_read(definition(), *WINDOW, bucket="telemetry"),
    "read_every_field": lambda: render_read(
        definition(fields=(), tags={}, every=3600), T0, T0 + 3600, bucket="telemetry"
    ),
    "downsample": lambda: render_downsample(definition(), *WINDOW, **ROUTES),
    "downsample_one_aggregate": lambda: render_downsample(
        definition(aggregates=("p95",), output_measurement="cpu", tags={}, every=90), T0, T0 + 90, **ROUTES
    ),
    "copy": lambda: render_copy(definition("copy", every=86400), T0, T0 + 86400, **ROUTES),
}


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_rendered_queries_equal_the_goldens(name: str) -> None:
    path = GOLDEN / f"{name}.flux"
    rendered = GOLDENS[name]()
    if UPDATE_GOLDEN:
        path.write_text(rendered)
    assert path.exists(), f"{path} is missing: run with TSBATCH_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text()


def test_every_golden_is_valid_flux(check_flux: Callable[[list[str]], list[Checked]]) -> None:
    paths = sorted(GOLDEN.glob("*.flux"))
    assert {p.stem for p in paths} == set(GOLDENS)
    for path, result in zip(paths, check_flux([p.read_text() for p in paths]), strict=True):
        assert result["errors"] == [], path.name


def test_a_downsample_stamps_every_aggregate_at_the_window_start() -> None:
    text = (GOLDEN / "downsample.flux").read_text()
    assert text.count('createEmpty: false, timeSrc: "_start")') == len(ALL_AGGREGATES)
    for aggregate in ALL_AGGREGATES:
        assert f'r._field + "_{aggregate}"' in text
    assert 'quantile(q: 0.95, column: column, method: "exact_mean")' in text
    assert "union(tables: [aggMean, aggMin, aggMax, aggCount," in text
    assert 'set(key: "_measurement", value: "cpu_5m")' in text


# --------------------------------------------------------------------------------------------------
# The check is worth something
# --------------------------------------------------------------------------------------------------


def test_the_parser_reports_syntax_and_type_errors(check_flux: Callable[[list[str]], list[Checked]]) -> None:
    good = (GOLDEN / "downsample.flux").read_text()
    unclosed = good.replace('fn: mean, createEmpty: false, timeSrc: "_start")', "fn: mean,", 1)
    wrong_type = good.replace("createEmpty: false", "createEmpty: 0", 1)
    unknown = good.replace("fn: mean,", "fn: meen,", 1)
    broken = good.replace('r._measurement == "cpu"', 'r._measurement == "cpu', 1)

    results = check_flux([good, unclosed, wrong_type, unknown, broken])

    assert results[0]["errors"] == []
    assert {e["kind"] for e in results[1]["errors"]} == {"syntax"}
    assert [e["message"] for e in results[2]["errors"]] == [
        "expected bool but found int (argument createEmpty)"
    ]
    assert [e["message"] for e in results[3]["errors"]] == ["undefined identifier meen"]
    assert results[4]["errors"] and results[4]["errors"][0]["kind"] == "syntax"


def test_the_parser_script_exits_1_on_a_broken_file(
    check_flux: Callable[[list[str]], list[Checked]], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.flux"
    broken.write_text('from(bucket: "a" |> range(start: -1h)\n')
    parse = [shutil.which("node") or "node", str(FLUX_DIR / "parse.mjs")]
    done = subprocess.run([*parse, str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith(f"{broken}:1:1: syntax: expected RPAREN")
    ok = subprocess.run([*parse, str(GOLDEN / "read.flux")], capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stdout) == (0, "")


def test_an_unescaped_value_would_change_the_query_and_the_check_sees_it(
    check_flux: Callable[[list[str]], list[Checked]],
) -> None:
    """What the escaping prevents: naive quoting lets a measurement end the string and add a step."""
    hostile = 'cpu") |> drop(columns: ["host"]) |> filter(fn: (r) => r._measurement == "cpu'
    safe = render_read(definition(measurement=hostile), *WINDOW, bucket="telemetry")
    naive = render_read(definition(), *WINDOW, bucket="telemetry").replace('"cpu"', f'"{hostile}"', 1)
    benign, escaped, injected = check_flux([render_read(definition(), *WINDOW, bucket="b"), safe, naive])
    assert escaped["errors"] == injected["errors"] == []  # both parse: parsing alone proves nothing
    assert shape(escaped["ast"]) == shape(benign["ast"])
    assert shape(injected["ast"]) != shape(benign["ast"])
    assert hostile in string_values(escaped["ast"])


# --------------------------------------------------------------------------------------------------
# Injection through every user-supplied value
# --------------------------------------------------------------------------------------------------

HOSTILE = [
    '"',
    "\\",
    '\\"',
    "trailing backslash\\",
    "${r._value}",
    "$${x}",
    "\\${x}",
    "$",
    "$\\",
    '$"',
    '$\\") |> drop() //',
    "{}",
    'cpu") |> drop() //',
    'cpu" or r._measurement != "',
    '"}) |> yield(name: "x") //',
    'a\n|> to(bucket: "evil")\n// ',
    "cr\rlf\r\ntab\tend",
    "nul\x00bel\x07esc\x1bdel\x7f",
    "\u2028line separator\u0085next line",
    "日本語 é 🦀",
    "/* */ // #",
]

# Where a user's text goes: (what it is, how to build the query with the value there).
POSITIONS: dict[str, Callable[[str], str]] = {
    "measurement": lambda v: render_downsample(definition(measurement=v), *WINDOW, **ROUTES),
    "field": lambda v: render_downsample(definition(fields=("usage", v)), *WINDOW, **ROUTES),
    "tag key": lambda v: render_downsample(definition(tags={v: "eu"}), *WINDOW, **ROUTES),
    "tag value": lambda v: render_downsample(definition(tags={"region": v}), *WINDOW, **ROUTES),
    "output measurement": lambda v: render_downsample(definition(output_measurement=v), *WINDOW, **ROUTES),
    "bucket": lambda v: render_downsample(definition(), *WINDOW, **{**ROUTES, "bucket": v}),
    "target bucket": lambda v: render_downsample(definition(), *WINDOW, **{**ROUTES, "target_bucket": v}),
    "org": lambda v: render_downsample(definition(), *WINDOW, **{**ROUTES, "org": v}),
    "read measurement": lambda v: render_read(definition(measurement=v), *WINDOW, bucket="b"),
    "read tag value": lambda v: render_read(definition(tags={"host": v}), *WINDOW, bucket="b"),
    "copy bucket": lambda v: render_copy(definition("copy"), *WINDOW, **{**ROUTES, "bucket": v}),
    "copy measurement": lambda v: render_copy(
        definition("copy", measurement=v, output_measurement=v), *WINDOW, **ROUTES
    ),
}


def test_hostile_text_in_any_value_stays_one_string(check_flux: Callable[[list[str]], list[Checked]]) -> None:
    cases = [(where, value) for where in POSITIONS for value in HOSTILE]
    benign = check_flux([POSITIONS[where]("plain") for where in POSITIONS])
    expected_shape = {where: shape(result["ast"]) for where, result in zip(POSITIONS, benign, strict=True)}
    results = check_flux([POSITIONS[where](value) for where, value in cases])
    for (where, value), result in zip(cases, results, strict=True):
        label = f"{where} = {value!r}"
        assert result["errors"] == [], label
        # Same statements, calls, filters and arguments as with a plain value: only a string differs ...
        assert shape(result["ast"]) == expected_shape[where], label
        # ... and it holds the hostile text exactly, never as an interpolation.
        assert value in string_values(result["ast"]), label
        assert not any(node.get("type") == "InterpolatedPart" for node in walk(result["ast"])), label


# Any character, but mostly those that mean something inside a Flux string.
SPECIAL = st.sampled_from(list('$\\"{}\n\r\t\x00x'))
ANY = st.characters(exclude_categories=("Cs",))  # no lone surrogates: they are not text
TEXT = st.lists(st.one_of(SPECIAL, SPECIAL, ANY), max_size=40).map("".join)


# No shrinking: each step would start Node again, and the message names the failing text anyway.
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.lists(TEXT, min_size=200, max_size=200))
def test_any_text_is_a_string_literal_of_itself(
    check_flux: Callable[[list[str]], list[Checked]], texts: list[str]
) -> None:
    results = check_flux([f"x = {flux_string(text)}" for text in texts])
    for text, result in zip(texts, results, strict=True):
        assert result["errors"] == [], repr(text)
        (assignment,) = result["ast"]["body"]
        assert assignment["init"]["type"] == "StringLiteral", repr(text)
        assert assignment["init"]["value"] == text


def test_literals() -> None:
    assert flux_string('a"b\\c${d}$e\n\x01') == '"a\\"b\\\\c\\x24{d}\\x24e\\n\\x01"'
    assert flux_column('a"b') == 'r["a\\"b"]'
    assert flux_time(T0) == "2026-01-01T00:00:00Z"
    assert flux_time(0) == "1970-01-01T00:00:00Z"
    assert [flux_duration(s) for s in (1, 60, 90, 3600, 5400, 86400, 90061)] == [
        "1s",
        "1m",
        "1m30s",
        "1h",
        "1h30m",
        "24h",
        "25h1m1s",
    ]


# --------------------------------------------------------------------------------------------------
# Values that are refused
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: flux_string(b"bytes"),  # type: ignore[arg-type]
        lambda: flux_string(1),  # type: ignore[arg-type]
        lambda: flux_string("lone surrogate \ud800"),
        lambda: flux_time(True),
        lambda: flux_time(1.5),  # type: ignore[arg-type]
        lambda: flux_time(10**10),
        lambda: flux_duration(0),
        lambda: flux_duration(-60),
        lambda: flux_duration(300.0),  # type: ignore[arg-type]
        lambda: flux_column(""),
        lambda: render_read(definition(), T0, T0 + 60, bucket="b"),  # not a window of 300 s
        lambda: render_read(definition(), T0 + 1, T0 + 301, bucket="b"),  # not aligned
        lambda: render_read(definition(), True, 300, bucket="b"),
        lambda: render_read(definition(), str(T0), T0 + 300, bucket="b"),  # type: ignore[arg-type]
        lambda: render_read(definition(), *WINDOW, bucket=""),
        lambda: render_read(definition(), *WINDOW, bucket=None),  # type: ignore[arg-type]
        lambda: render_read({"kind": "downsample"}, *WINDOW, bucket="b"),  # type: ignore[arg-type]
        lambda: render_downsample(definition(), *WINDOW, **{**ROUTES, "org": 7}),
        lambda: render_downsample(definition("copy"), *WINDOW, **ROUTES),
        lambda: render_copy(definition(), *WINDOW, **ROUTES),
        lambda: render_downsample(
            definition().model_copy(update={"aggregates": ("mean", "median")}), *WINDOW, **ROUTES
        ),
        lambda: render_downsample(
            definition().model_copy(update={"aggregates": ("mean) |> drop() //",)}), *WINDOW, **ROUTES
        ),
        lambda: render_downsample(definition().model_copy(update={"aggregates": ()}), *WINDOW, **ROUTES),
        lambda: render_read(definition().model_copy(update={"measurement": 5}), *WINDOW, bucket="b"),
        lambda: render_read(definition().model_copy(update={"fields": ["a"]}), *WINDOW, bucket="b"),
        lambda: render_read(definition().model_copy(update={"tags": {"a": 1}}), *WINDOW, bucket="b"),
        lambda: render_read(definition().model_copy(update={"every": "300"}), *WINDOW, bucket="b"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(call: Callable[[], str]) -> None:
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------------------------------------------
# What goes over the wire
# --------------------------------------------------------------------------------------------------


def test_the_query_sent_for_a_window_is_the_golden() -> None:
    """influxdb-client's async query API, as the workers use it, against the fault server: the body is
    ``{"query": <the golden>, "dialect": ..., "extern": ...}`` and the answer comes back unchanged."""
    from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

    answer = (FLUX_DIR / "answers" / "window.csv").read_bytes().decode()
    queries = [(GOLDEN / "read.flux").read_text(), (GOLDEN / "downsample.flux").read_text()]

    async def send(url: str) -> list[str]:
        async with InfluxDBClientAsync(url=url, token="t0ken", org="acme") as client:
            api = client.query_api()
            return [await api.query_raw(query) for query in queries]

    # The upstream is for writes only; no query reaches it.
    with FaultServer.start("http://127.0.0.1:9") as server:
        server.set_query_answers([{"body": answer}])
        answers = asyncio.run(send(server.url))
        records = server.queries()
    assert answers == [answer, answer]
    assert [record["query"]["org"] for record in records] == ["acme", "acme"]
    bodies = [json.loads(record["body"]) for record in records]
    assert [body["query"] for body in bodies] == [
        render_read(definition(), *WINDOW, bucket="telemetry"),
        render_downsample(definition(), *WINDOW, **ROUTES),
    ]
    assert [body["query"] for body in bodies] == queries
    # Without "type" InfluxDB takes the query as Flux; "extern" is where InfluxDB Cloud would take
    # parameters, which InfluxDB OSS ignores (influxdata/docs-v2#5320): empty.
    for body in bodies:
        assert body.get("type", "flux") == "flux"
        assert body["extern"] == {"imports": [], "body": []}
        assert body["dialect"] == {
            "header": True,
            "delimiter": ",",
            "annotations": ["datatype", "group", "default"],
            "commentPrefix": "#",
            "dateTimeFormat": "RFC3339",
        }
