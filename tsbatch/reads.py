"""What a window's read asks its source, shared by the workers (which send it) and the CLI (which shows
it: ``tsbatch backfill --dry-run``).

VictoriaMetrics names a series written over the InfluxDB protocol ``<measurement>_<field>``. With
``fields`` given, the names are matched exactly; without them, by the prefix ``<measurement>_``, which also
matches another measurement that starts with this one's name and an underscore (``cpu_load`` when the
job reads ``cpu``): list the fields when names share a prefix (docs/WINDOWS.md).
"""

from __future__ import annotations

import re

from config import RouteSettings
from tsbatch.windows import Definition, iso


def _label_value(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def vm_selectors(defn: Definition) -> list[str]:
    """The ``match[]`` series selectors of a job's filters (one per field, or one prefix regex)."""
    tags = "".join(f",{k}={_label_value(v)}" for k, v in sorted(defn.tags.items()))
    if defn.fields:
        return ["{__name__=" + _label_value(f"{defn.measurement}_{f}") + tags + "}" for f in defn.fields]
    prefix = re.escape(defn.measurement + "_")
    return ["{__name__=~" + _label_value(prefix + ".+") + tags + "}"]


def describe_read(route: RouteSettings, defn: Definition, start: int, end: int) -> str:
    """The request a window's read sends, for a person (no token: none is ever in it)."""
    if route.kind == "victoriametrics":
        match = " ".join(f"match[]={s}" for s in vm_selectors(defn))
        return f"GET {route.url}/api/v1/export {match} start={iso(start)} end={iso(end)} (exclusive)"
    from tsbatch.flux import render_read

    return f"POST {route.url}/api/v2/query org={route.org}\n" + render_read(
        defn, start, end, bucket=route.bucket
    )
