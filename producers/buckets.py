"""Retention as code: the ``[buckets.NAME]`` settings compared with the server (``plan``) and made so
(``apply``), idempotently.

A declaration names a route; the route says the server, the org and the bucket's name. For each one:

    missing on the server                       create   (POST, then re-read)
    retention, shard group or description off   update   (PATCH, then re-read)
    as declared                                 same     (no request that changes anything)
    route of kind victoriametrics               skipped  (it has no buckets: -retentionPeriod is global)
    anything the server refuses                 error    (the others go on; the command exits 1)

``shard_group = 0`` means the server's own default for the retention, the rule InfluxDB applies when it
creates a bucket (``shardGroupDuration`` in its meta store): 1h under 2 days, 1d under 180 days, else 7d.
That value is compared and, on an update, sent: a retention made shorter than the bucket's current shard
group is otherwise refused ("shard-group duration must also be updated to be smaller than new retention
duration").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from config import RouteSettings, Settings, constants
from config.settings import BucketSettings, format_duration
from producers.bucketsapi import BucketsClient, ServerBucket
from tsbatch.errors import TsbatchError
from tsbatch.token import RouteToken

Action = Literal["create", "update", "same", "skipped", "error"]
Outcome = Literal["created", "updated", "unchanged", "skipped", "failed", "planned"]
ClientFactory = Callable[[str, RouteSettings], BucketsClient]


def default_shard_group(retention: int) -> int:
    """InfluxDB's shard-group duration for a retention (``meta.shardGroupDuration``; 0 is for ever)."""
    if retention == 0 or retention >= 180 * 86_400:
        return 7 * 86_400
    if retention >= 2 * 86_400:
        return 86_400
    return 3_600


@dataclass(frozen=True)
class Desired:
    """One declaration, resolved through its route."""

    name: str
    route_name: str
    route: RouteSettings
    retention: int
    shard_group: int  # as declared: 0 is the server's default
    description: str

    @property
    def effective_shard_group(self) -> int:
        return self.shard_group or default_shard_group(self.retention)

    @classmethod
    def of(cls, name: str, decl: BucketSettings, settings: Settings) -> Desired:
        return cls(
            name=name,
            route_name=decl.route,
            route=settings.route(decl.route),
            retention=decl.retention,
            shard_group=decl.shard_group,
            description=decl.description,
        )


@dataclass
class BucketPlan:
    """What ``plan`` found for one declaration, and what ``apply`` did about it."""

    name: str
    route: str
    bucket: str
    org: str
    url: str
    action: Action
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field: (server, settings)
    message: str = ""
    outcome: Outcome = "planned"
    bucket_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "route": self.route,
            "bucket": self.bucket,
            "org": self.org,
            "url": self.url,
            "action": self.action,
            "changes": {k: {"server": s, "settings": w} for k, (s, w) in self.changes.items()},
            "outcome": self.outcome,
            "bucket_id": self.bucket_id,
            "message": self.message,
        }


def differences(want: Desired, have: ServerBucket) -> dict[str, tuple[Any, Any]]:
    """The fields where the server's bucket is not as declared: ``{field: (server, settings)}``."""
    changes: dict[str, tuple[Any, Any]] = {}
    if have.retention != want.retention:
        changes["retention"] = (have.retention, want.retention)
    # 0 from the server: it did not say (an InfluxDB before shard-group durations); nothing to compare.
    if have.shard_group and have.shard_group != want.effective_shard_group:
        changes["shard_group"] = (have.shard_group, want.effective_shard_group)
    if have.description != want.description:
        changes["description"] = (have.description, want.description)
    return changes


def default_client(route_name: str, route: RouteSettings) -> BucketsClient:
    """A client with the route's token (``token`` or the ``token_file``'s current content)."""
    token = RouteToken(route_name, route).current()
    return BucketsClient(url=route.url, token=token, timeout_s=constants.ADMIN_TIMEOUT_S)


class Reconciler:
    """Plans and applies every ``[buckets.NAME]``; one client (one org lookup) per route."""

    def __init__(self, settings: Settings, *, client_for: ClientFactory = default_client) -> None:
        self.settings = settings
        self.client_for = client_for
        self._clients: dict[str, BucketsClient] = {}
        self._orgs: dict[str, str] = {}

    def plan(self) -> list[BucketPlan]:
        return [self._plan(Desired.of(n, d, self.settings)) for n, d in sorted(self.settings.buckets.items())]

    def apply(self) -> list[BucketPlan]:
        plans = []
        for name, decl in sorted(self.settings.buckets.items()):
            want = Desired.of(name, decl, self.settings)
            plans.append(self._apply(want, self._plan(want)))
        return plans

    # -- one declaration ------------------------------------------------------------------------

    def _plan(self, want: Desired) -> BucketPlan:
        route = want.route
        plan = BucketPlan(
            want.name, want.route_name, route.bucket, route.org, route.url, action="same", outcome="planned"
        )
        if route.kind != "influxdb2":
            plan.action, plan.outcome = "skipped", "skipped"
            plan.message = (
                f"route {want.route_name} is {route.kind}, which has no buckets (its retention is the "
                "server's -retentionPeriod): nothing to plan or apply"
            )
            return plan
        try:
            have = self._client(want).find(name=route.bucket, org_id=self._org_id(want))
        except TsbatchError as e:
            return _failed(plan, str(e))
        if have is None:
            plan.action = "create"
            plan.changes = {
                "retention": (None, want.retention),
                "shard_group": (None, want.effective_shard_group),
            }
            if want.description:
                plan.changes["description"] = (None, want.description)
            return plan
        plan.bucket_id = have.id
        plan.changes = differences(want, have)
        plan.action = "update" if plan.changes else "same"
        return plan

    def _apply(self, want: Desired, plan: BucketPlan) -> BucketPlan:
        if plan.action in ("skipped", "error"):
            return plan
        if plan.action == "same":
            plan.outcome = "unchanged"
            return plan
        outcome: Outcome
        try:
            client = self._client(want)
            if plan.action == "create":
                made = client.create(
                    org_id=self._org_id(want),
                    name=want.route.bucket,
                    retention=want.retention,
                    shard_group=want.shard_group,  # 0: the server picks its default, as we expect
                    description=want.description,
                )
                bucket_id, outcome = made.id, "created"
            else:
                client.update(
                    plan.bucket_id,
                    retention=want.retention,
                    shard_group=want.effective_shard_group,
                    description=want.description if "description" in plan.changes else None,
                )
                bucket_id, outcome = plan.bucket_id, "updated"
            now = client.get(bucket_id)  # the server's word for what it holds now, not its echo
        except TsbatchError as e:
            return _failed(plan, str(e))
        plan.bucket_id = bucket_id
        left = differences(want, now)
        if left:
            still = describe_changes(left)
            return _failed(plan, f"after the {plan.action}, the server still differs: {still}")
        plan.outcome = outcome
        return plan

    def _client(self, want: Desired) -> BucketsClient:
        if want.route_name not in self._clients:
            self._clients[want.route_name] = self.client_for(want.route_name, want.route)
        return self._clients[want.route_name]

    def _org_id(self, want: Desired) -> str:
        if want.route_name not in self._orgs:
            self._orgs[want.route_name] = self._client(want).org_id(want.route.org)
        return self._orgs[want.route_name]


def _failed(plan: BucketPlan, message: str) -> BucketPlan:
    """The plan marked failed; its action stays what was attempted (an error before any: ``error``)."""
    if plan.outcome == "planned" and plan.action == "same" and not plan.bucket_id:
        plan.action = "error"  # the lookup itself failed: nothing is known about the bucket
    plan.outcome, plan.message = "failed", message
    return plan


def _show(field_name: str, value: Any) -> str:
    if value is None:
        return "-"
    if field_name == "retention":
        return "forever" if value == 0 else format_duration(int(value))
    if field_name == "shard_group":
        return format_duration(int(value))
    return repr(value)


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``retention 7d -> 30d, description '' -> 'warm data'`` (server -> settings)."""
    parts = []
    for name, (have, want) in changes.items():
        label = name.replace("_", " ")
        if have is None:
            parts.append(f"{label} {_show(name, want)}")
        else:
            parts.append(f"{label} {_show(name, have)} -> {_show(name, want)}")
    return ", ".join(parts)
