"""The InfluxDB v2 organizations and buckets API, as ``tsbatch buckets`` needs it: five requests.

    GET   /api/v2/orgs?org=NAME                  the org's ID (404 when there is no such org)
    GET   /api/v2/buckets?name=NAME&orgID=ID     the bucket, if any (InfluxDB answers 404 when absent)
    GET   /api/v2/buckets/ID                     a re-read after a change, to confirm it
    POST  /api/v2/buckets                        create: orgID, name, description, retentionRules
    PATCH /api/v2/buckets/ID                     update: description, retentionRules

Plain HTTP over the standard library, not influxdb-client, deliberately:

- the CLI runs beside the producer, which must not load the workers' write stack (influxdb-client,
  aiohttp; see ``tsbatch/envelope.py``); ``InfluxDBClientAsync`` has no buckets API anyway, and the sync
  ``BucketsApi`` would bring urllib3 and the generated services for five small JSON requests;
- the exact body matters and is easy to see here: an empty ``retentionRules`` is infinite retention on
  create, but "no change" on PATCH, where infinite is ``everySeconds: 0`` (influxdata/openapi
  ``PatchRetentionRules``: "No rules means no updates"); the generated models hide that;
- an absent bucket is a 404 from ``GET /api/v2/buckets?name=`` (not an empty list), which must read as
  "missing" while a 404 for the org is an error;
- every failure becomes one ``BucketApiError`` naming the request and the server's ``message``, and the
  token only ever goes into the ``Authorization`` header.

Shapes as in the InfluxDB v2 API reference (influxdata/openapi; ``tenant/http_server_bucket.go``):
a bucket's ``retentionRules`` is ``[]`` or one ``{"type": "expire", "everySeconds": N,
"shardGroupDurationSeconds": M}``; ``everySeconds`` 0 means for ever.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tsbatch.errors import BucketApiError

_HINTS = {
    401: "the route's token was refused",
    403: "the route's token may not do this (it needs read on orgs and read/write on buckets)",
}


@dataclass(frozen=True)
class ServerBucket:
    """A bucket as the server describes it. ``retention`` 0: kept for ever; ``shard_group`` 0: not said."""

    id: str
    name: str
    org_id: str
    retention: int
    shard_group: int
    description: str

    @classmethod
    def from_json(cls, raw: Any) -> ServerBucket:
        try:
            rules = [r for r in raw.get("retentionRules") or [] if r.get("type", "expire") == "expire"]
            rule = rules[0] if rules else {}
            return cls(
                id=str(raw["id"]),
                name=str(raw["name"]),
                org_id=str(raw.get("orgID", "")),
                retention=int(rule.get("everySeconds") or 0),
                shard_group=int(rule.get("shardGroupDurationSeconds") or 0),
                description=str(raw.get("description") or ""),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise BucketApiError(f"unexpected bucket in the server's answer ({e!r}): {raw!r:.200}") from None


def retention_rules(retention: int, shard_group: int) -> list[dict[str, Any]]:
    """A create's ``retentionRules``: none for for-ever with the server's shard group, as ``influx bucket
    create`` sends (the older API's infinite retention), else one expire rule with what is set."""
    if not retention and not shard_group:
        return []
    rule: dict[str, Any] = {"type": "expire", "everySeconds": retention}
    if shard_group:
        rule["shardGroupDurationSeconds"] = shard_group
    return [rule]


class BucketsClient:
    """One InfluxDB v2 server, with one token. Synchronous: the CLI makes a handful of requests."""

    def __init__(self, *, url: str, token: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def org_id(self, org: str) -> str:
        answer = self._call("GET", "/api/v2/orgs", query={"org": org}, missing_ok=True)
        orgs = [o for o in (answer or {}).get("orgs") or [] if o.get("name") == org]
        if not orgs:
            raise BucketApiError(f"{self.url}: no organization named {org!r} (the route's org)", status=404)
        return str(orgs[0]["id"])

    def find(self, *, name: str, org_id: str) -> ServerBucket | None:
        """The bucket named ``name`` in the org, or None."""
        answer = self._call("GET", "/api/v2/buckets", query={"name": name, "orgID": org_id}, missing_ok=True)
        for raw in (answer or {}).get("buckets") or []:
            bucket = ServerBucket.from_json(raw)
            if bucket.name == name:
                return bucket
        return None

    def get(self, bucket_id: str) -> ServerBucket:
        return ServerBucket.from_json(self._call("GET", f"/api/v2/buckets/{_segment(bucket_id)}"))

    def create(
        self, *, org_id: str, name: str, retention: int, shard_group: int, description: str
    ) -> ServerBucket:
        body = {
            "orgID": org_id,
            "name": name,
            "description": description,
            "retentionRules": retention_rules(retention, shard_group),
        }
        return ServerBucket.from_json(self._call("POST", "/api/v2/buckets", body=body))

    def update(
        self, bucket_id: str, *, retention: int, shard_group: int | None, description: str | None
    ) -> ServerBucket:
        """PATCH the retention (0: for ever), and the shard group and description when given."""
        rule: dict[str, Any] = {"type": "expire", "everySeconds": retention}
        if shard_group is not None:
            rule["shardGroupDurationSeconds"] = shard_group
        body: dict[str, Any] = {"retentionRules": [rule]}
        if description is not None:
            body["description"] = description
        path = f"/api/v2/buckets/{_segment(bucket_id)}"
        return ServerBucket.from_json(self._call("PATCH", path, body=body))

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON answer; ``None`` for a 404 when ``missing_ok``; else ``BucketApiError``."""
        what = f"{method} {path}"
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            with e:
                detail = e.read()
            if e.code == 404 and missing_ok:
                return None
            raise _refused(self.url, what, e.code, detail) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise BucketApiError(f"{self.url}: {what}: cannot reach the server ({reason})") from None
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise BucketApiError(f"{self.url}: {what}: the answer is not JSON: {text[:200]!r}") from None


def _segment(bucket_id: str) -> str:
    return urllib.parse.quote(bucket_id, safe="")


def _refused(url: str, what: str, status: int, body: bytes) -> BucketApiError:
    """InfluxDB's error body is ``{"code": ..., "message": ...}``; anything else is quoted as it is."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
        text = f"{parsed.get('code', '')}: {parsed.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        text = text[:300]
    hint = f" ({_HINTS[status]})" if status in _HINTS else ""
    return BucketApiError(f"{url}: {what}: {status} {text}{hint}", status=status)
