"""The fault server's InfluxDB v2 organizations and buckets API, with its state kept in the server.

Registered by ``tests/faultserver.py`` on the same port as the write API. What it answers, and how,
follows InfluxDB 2.7 (``tenant/http_server_bucket.go``, the v2 API reference, ``influx bucket``):

``GET /api/v2/orgs[?org=NAME]``
    ``{"links": {...}, "orgs": [...]}``; a named org that does not exist is a 404
    ``organization name "NAME" not found``.
``GET /api/v2/buckets[?name=&orgID=&org=]``
    ``{"links": {...}, "buckets": [...]}``, filtered. A ``name`` that matches nothing is a 404
    ``bucket "NAME" not found``, as InfluxDB answers (not an empty list); an unknown org is a 404.
``GET /api/v2/buckets/{id}``
    The bucket, or 404 ``bucket not found``.
``POST /api/v2/buckets``
    Body ``{"orgID", "name", "description", "retentionRules": [{"type": "expire", "everySeconds": N,
    "shardGroupDurationSeconds": M}]}``; 201 with the bucket. No rule, or ``everySeconds`` 0, is for ever;
    a shard group of 0 or absent becomes InfluxDB's default for the retention (1h under 2 days, 1d under
    180 days, else 7d). Refused as InfluxDB refuses: 400 without a valid ``orgID`` or with a name
    starting with ``_``; 404 for an unknown org; 422 for two rules, negative seconds, a shard group longer
    than the retention, or a name the org already has (code ``conflict``); 500 for a retention under 1h.
``PATCH /api/v2/buckets/{id}``
    Body ``{"name", "description", "retentionRules": [{"everySeconds", "shardGroupDurationSeconds"}]}``,
    each optional: no rules changes no retention, ``everySeconds: 0`` makes it for ever. A retention
    shorter than the shard group without a new shard group is a 422 ``shard-group duration must also be
    updated to be smaller than new retention duration``. 200 with the bucket.

Every request needs the token when the server has one (401 ``unauthorized access``). A bucket has the
documented fields: ``id``, ``orgID``, ``type`` ("user"), ``name``, ``description`` (absent when empty),
``retentionRules`` (one rule once the shard group is known, as InfluxDB 2.x shows it), ``schemaType``,
``createdAt``, ``updatedAt``, ``labels``, ``links``.

Control: ``PUT /__control/orgs`` ``["acme", ...]`` replaces the orgs (their buckets go with removed
ones; the server starts with ``--org``, default ``local``); ``GET /__control/buckets`` is every bucket;
``GET /__control/admin`` every request to these endpoints, oldest first (``id``, ``method``, ``path``,
``query``, ``headers`` with ``Authorization`` redacted, ``body``, ``status``); ``DELETE`` clears it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
HEADERS: Final = {"X-Influxdb-Version": "v2.7.11", "X-Influxdb-Build": "OSS"}
CODES: Final = {400: "invalid", 401: "unauthorized", 404: "not found", 422: "unprocessable entity"}
MIN_RETENTION_S: Final = 3600
SHARD_GROUP_TOO_LONG: Final = (
    "shard-group duration must also be updated to be smaller than new retention duration"
)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def default_shard_group(retention: int) -> int:
    """InfluxDB's ``meta.shardGroupDuration``."""
    if retention == 0 or retention >= 180 * 86_400:
        return 7 * 86_400
    return 86_400 if retention >= 2 * 86_400 else 3_600


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error(status: int, message: str, code: str | None = None) -> web.Response:
    code = code or CODES.get(status, "internal error")
    body = json.dumps({"code": code, "message": message}, separators=(",", ":"))
    headers = {**HEADERS, "X-Platform-Error-Code": code, "Content-Type": JSON_CONTENT_TYPE}
    return web.Response(status=status, body=body.encode(), headers=headers)


def ok(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        headers={**HEADERS, "Content-Type": JSON_CONTENT_TYPE},
    )


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.response = error(status, message, code)


@dataclasses.dataclass
class Org:
    id: str
    name: str
    created: str = dataclasses.field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        links = {k: f"/api/v2/orgs/{self.id}/{k}" for k in ("members", "owners", "labels", "secrets")}
        links |= {"self": f"/api/v2/orgs/{self.id}", "buckets": f"/api/v2/buckets?org={self.name}"}
        links |= {
            "dashboards": f"/api/v2/dashboards?org={self.name}",
            "tasks": f"/api/v2/tasks?org={self.name}",
        }
        return {
            "links": links,
            "id": self.id,
            "name": self.name,
            "description": "",
            "createdAt": self.created,
            "updatedAt": self.created,
        }


@dataclasses.dataclass
class Bucket:
    id: str
    org_id: str
    name: str
    description: str
    retention: int
    shard_group: int
    created: str = dataclasses.field(default_factory=_now)
    updated: str = ""

    def rule(self) -> dict[str, Any]:
        return {
            "type": "expire",
            "everySeconds": self.retention,
            "shardGroupDurationSeconds": self.shard_group,
        }

    def to_json(self) -> dict[str, Any]:
        links = {k: f"/api/v2/buckets/{self.id}/{k}" for k in ("members", "owners", "labels")}
        links |= {"self": f"/api/v2/buckets/{self.id}", "org": f"/api/v2/orgs/{self.org_id}"}
        links["write"] = f"/api/v2/write?org={self.org_id}&bucket={self.id}"
        out: dict[str, Any] = {"id": self.id, "orgID": self.org_id, "type": "user"}
        if self.description:
            out["description"] = self.description
        return out | {
            "name": self.name,
            "retentionRules": [
                {
                    "type": "expire",
                    "everySeconds": self.retention,
                    "shardGroupDurationSeconds": self.shard_group,
                }
            ],
            "schemaType": "implicit",
            "createdAt": self.created,
            "updatedAt": self.updated or self.created,
            "labels": [],
            "links": links,
        }


@dataclasses.dataclass
class AdminRecord:
    id: int
    arrival_monotonic: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str = ""
    status: int | None = None


def _redacted(headers: Any) -> dict[str, str]:
    return {k: "<redacted>" if k.lower() == "authorization" else v for k, v in headers.items()}


def _valid_id(text: object) -> bool:
    return isinstance(text, str) and len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def _rule(body: dict[str, Any]) -> dict[str, Any] | None:
    rules = body.get("retentionRules") or []
    if not isinstance(rules, list) or len(rules) > 1:
        raise Refused(422, "buckets cannot have more than one retention rule at this time")
    if not rules:
        return None
    rule = rules[0]
    if not isinstance(rule, dict):
        raise Refused(400, "invalid json structure")
    for key, what in (("everySeconds", "expiration"), ("shardGroupDurationSeconds", "shard-group duration")):
        value = rule.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise Refused(422, f"{what} seconds cannot be negative")
    return rule


def _durations(retention: int, shard_group: int) -> tuple[int, int]:
    if 0 < retention < MIN_RETENTION_S:
        raise Refused(500, "retention policy duration must be at least 1h0m0s", "internal error")
    return retention, shard_group or default_shard_group(retention)


class BucketsApi:
    """The orgs and buckets, and the aiohttp handlers over them."""

    def __init__(self, orgs: Sequence[str], *, authorized: Callable[[web.Request], bool]) -> None:
        self._ids = itertools.count(1)
        self.orgs: dict[str, Org] = {}
        self.buckets: dict[str, Bucket] = {}
        self.records: list[AdminRecord] = []
        self.authorized = authorized
        self.set_orgs(orgs)

    def _new_id(self, kind: int) -> str:
        return f"{kind:02x}{next(self._ids):014x}"

    def set_orgs(self, names: Sequence[str]) -> None:
        kept = {o.name: o for o in self.orgs.values()}
        self.orgs = {}
        for name in names:
            org = kept.get(name) or Org(self._new_id(0x0A), name)
            self.orgs[org.id] = org
        self.buckets = {k: b for k, b in self.buckets.items() if b.org_id in self.orgs}

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/v2/orgs", self._recorded(self.get_orgs))
        app.router.add_get("/api/v2/buckets", self._recorded(self.list_buckets))
        app.router.add_post("/api/v2/buckets", self._recorded(self.post_bucket))
        app.router.add_get("/api/v2/buckets/{id}", self._recorded(self.get_bucket))
        app.router.add_patch("/api/v2/buckets/{id}", self._recorded(self.patch_bucket))
        app.router.add_post("/api/v2/delete", self._recorded(self.post_delete))
        app.router.add_put("/__control/orgs", self.put_orgs)
        app.router.add_get("/__control/buckets", self.control_buckets)
        app.router.add_get("/__control/admin", self.control_records)
        app.router.add_delete("/__control/admin", self.clear_records)

    def _recorded(self, handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.Response:
            record = AdminRecord(
                id=len(self.records) + 1,
                arrival_monotonic=time.monotonic(),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=_redacted(request.headers),
                body=(await request.read()).decode("utf-8", "replace"),
            )
            self.records.append(record)
            if not self.authorized(request):
                response = error(401, "unauthorized access")
            else:
                try:
                    response = await handler(request)
                except Refused as e:
                    response = e.response
            record.status = response.status
            return response

        return run

    # -- API -------------------------------------------------------------------------------------

    async def post_delete(self, request: web.Request) -> web.Response:
        """``POST /api/v2/delete?org=&bucket=`` with ``{"start", "stop", "predicate"}``: recorded (the test
        reads the record), answered 204 as InfluxDB does; 400 without start or stop."""
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            return error(400, "invalid JSON body")
        if not isinstance(body, dict) or not body.get("start") or not body.get("stop"):
            return error(400, "start and stop are required")
        if not request.query.get("bucket"):
            return error(404, "bucket not found")
        return web.Response(status=204)

    async def get_orgs(self, request: web.Request) -> web.Response:
        name = request.query.get("org")
        orgs = [o for o in self.orgs.values() if name is None or o.name == name]
        if name is not None and not orgs:
            return error(404, f'organization name "{name}" not found')
        return ok({"links": {"self": "/api/v2/orgs"}, "orgs": [o.to_json() for o in orgs]})

    async def list_buckets(self, request: web.Request) -> web.Response:
        query = request.query
        org_id = self._org_id(query.get("orgID"), query.get("org"))
        name = query.get("name")
        found = [
            b
            for b in self.buckets.values()
            if (org_id is None or b.org_id == org_id) and (name is None or b.name == name)
        ]
        if name is not None and not found:
            return error(404, f'bucket "{name}" not found')
        links = {"self": "/api/v2/buckets?descending=false&limit=20&offset=0"}
        return ok({"links": links, "buckets": [b.to_json() for b in found]})

    def _org_id(self, org_id: str | None, org: str | None) -> str | None:
        if org_id is not None:
            if not _valid_id(org_id):
                raise Refused(400, "id must have a length of 16 bytes")
            if org_id not in self.orgs:
                raise Refused(404, "organization not found")
            return org_id
        if org is not None:
            for o in self.orgs.values():
                if o.name == org:
                    return o.id
            raise Refused(404, f'organization name "{org}" not found')
        return None

    async def get_bucket(self, request: web.Request) -> web.Response:
        return ok(self._bucket(request.match_info["id"]).to_json())

    def _bucket(self, bucket_id: str) -> Bucket:
        if not _valid_id(bucket_id):
            raise Refused(400, "id must have a length of 16 bytes")
        if bucket_id not in self.buckets:
            raise Refused(404, "bucket not found")
        return self.buckets[bucket_id]

    async def post_bucket(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        org_id = body.get("orgID")
        if not _valid_id(org_id):
            raise Refused(400, "organization id must be provided")
        assert isinstance(org_id, str)
        if org_id not in self.orgs:
            raise Refused(404, "organization not found")
        name = self._checked_name(body.get("name"), org_id)
        rule = _rule(body) or {}
        retention, shard_group = _durations(
            rule.get("everySeconds") or 0, rule.get("shardGroupDurationSeconds") or 0
        )
        if retention and shard_group > retention:
            raise Refused(422, "retention policy duration must be greater than the shard duration")
        description = body.get("description") or ""
        bucket = Bucket(self._new_id(0x0B), org_id, name, str(description), retention, shard_group)
        self.buckets[bucket.id] = bucket
        return ok(bucket.to_json(), status=201)

    def _checked_name(self, name: object, org_id: str, *, same: str = "") -> str:
        if not isinstance(name, str) or not name:
            raise Refused(400, "bucket name is required")
        if name.startswith("_"):
            raise Refused(400, f"bucket name {name} is invalid. Buckets may not start with underscore")
        taken = any(b.name == name and b.org_id == org_id and b.id != same for b in self.buckets.values())
        if taken:
            raise Refused(422, f"bucket with name {name} already exists", "conflict")
        return name

    async def patch_bucket(self, request: web.Request) -> web.Response:
        bucket = self._bucket(request.match_info["id"])
        body = await _json_object(request)
        rule = _rule(body)
        name = bucket.name
        if body.get("name") is not None:
            name = self._checked_name(body["name"], bucket.org_id, same=bucket.id)
        retention, shard_group = bucket.retention, bucket.shard_group
        if rule is not None:
            if rule.get("everySeconds") is not None:
                retention = rule["everySeconds"]
            if rule.get("shardGroupDurationSeconds") is not None:
                shard_group = rule["shardGroupDurationSeconds"] or default_shard_group(retention)
        retention, shard_group = _durations(retention, shard_group)
        if retention and shard_group > retention:
            raise Refused(
                422, "shard-group duration must also be updated to be smaller than new retention duration"
            )
        bucket.name, bucket.retention, bucket.shard_group = name, retention, shard_group
        if body.get("description") is not None:
            bucket.description = str(body["description"])
        bucket.updated = _now()
        return ok(bucket.to_json())

    # -- control ---------------------------------------------------------------------------------

    async def put_orgs(self, request: web.Request) -> web.Response:
        try:
            names = await request.json()
        except json.JSONDecodeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            return web.json_response({"error": "expected a list of org names"}, status=400)
        self.set_orgs(names)
        return web.json_response({"orgs": [o.to_json() for o in self.orgs.values()]})

    async def control_buckets(self, _request: web.Request) -> web.Response:
        return web.json_response([b.to_json() for b in self.buckets.values()])

    async def control_records(self, _request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(r) for r in self.records])

    async def clear_records(self, _request: web.Request) -> web.Response:
        self.records = []
        return web.json_response({"cleared": True})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError:
        raise Refused(400, "invalid json structure") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid json structure")
    return body
