"""A circuit breaker and a throttle per route, shared by every worker process on every node via Redis.

Breaker: after ``threshold`` consecutive failed writes to a route (any worker), the route is *open*
for ``cooldown_s``: work for it is deferred (transient failures) or dead-lettered at once (permanent
ones: a wrong token does not fix itself, and hammering the server helps nobody). After the cool-down
exactly one probe is let through cluster-wide; its success closes the breaker, its failure re-opens it.

Throttle: when a route answers 429 or 503 with Retry-After, every worker holds its writes to that
route until then, not just the one that was told (telegraf#9353 logged "retry in 0s" after a 429).
It is a pause-until gate, the degenerate token bucket whose refill is the server's Retry-After.
A pause is capped at ``max_pause_s`` (``worker.retry_after_max_s``) when set and again when read: a
server's ``Retry-After: 99999999`` must not stop a route cluster-wide for years (issue #8).

Both only ever hold their route back: ``tsbatch routes`` shows them, ``tsbatch routes clear NAME``
deletes them (:meth:`RouteGuard.states`, :meth:`RouteGuard.clear`).

Why not pybreaker's ``CircuitRedisStorage``: its transitions take several Redis round trips, so N
processes reaching half-open together all probe; here each transition is one Lua script.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from config import constants
from tsbatch.ledger import load_script, now_ms


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str  # closed | probe | open
    wait_s: float = 0.0
    kind: str = ""  # transient | permanent: what opened the breaker
    reason: str = ""
    failures: int = 0  # consecutive failures so far (a closed breaker may be counting)

    @property
    def allowed(self) -> bool:
        return self.state != "open"


@dataclass(frozen=True, slots=True)
class RouteState:
    """What holds a route back, for operators (``tsbatch routes``). Never carries a URL or a token."""

    route: str
    breaker: str  # closed | open | probing (the cool-down is over and one probe is let through)
    failures: int = 0  # consecutive failed writes counted so far
    kind: str = ""  # transient | permanent: what last failed
    reason: str = ""
    open_for_s: float = 0.0  # time left before the open breaker lets a probe through
    paused_for_s: float = 0.0  # time left on the Retry-After pause, as stored (before the read cap)

    @property
    def held(self) -> bool:
        return self.breaker != "closed" or self.failures > 0 or self.paused_for_s > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RouteGuard:
    """The breaker and throttle of every route, keyed under ``<prefix>:breaker:`` and ``:throttle:``."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        threshold: int,
        cooldown_s: float,
        max_pause_s: float = constants.RETRY_AFTER_MAX_S,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.threshold = threshold
        self.cooldown_ms = int(cooldown_s * 1000)
        self.max_pause_s = max_pause_s
        self._allow = client.register_script(load_script("breaker_allow"))
        self._failure = client.register_script(load_script("breaker_failure"))
        self._throttle = client.register_script(load_script("throttle"))

    def _breaker(self, route: str) -> str:
        return f"{self.prefix}:breaker:{route}"

    def _gate(self, route: str) -> str:
        return f"{self.prefix}:throttle:{route}"

    def allow(self, route: str) -> Verdict:
        # A probe holds its turn for a cool-down: if it dies silently, another may probe after that.
        state, wait_ms, kind, reason, failures = self._allow(
            keys=[self._breaker(route)], args=[now_ms(), self.cooldown_ms]
        )
        return Verdict(str(state), int(wait_ms) / 1000, str(kind), str(reason), int(failures))

    def failure(self, route: str, *, kind: str, reason: str) -> bool:
        """Record a failed write; True if it opened the breaker."""
        args: list[str | int] = [now_ms(), self.threshold, self.cooldown_ms, kind, reason[:500]]
        return bool(self._failure(keys=[self._breaker(route)], args=args))

    def success(self, route: str) -> None:
        self.redis.delete(self._breaker(route))

    def count(self, name: str) -> None:
        """Bump a counter in the ledger's stats hash (retries, deferrals) for operators and tests."""
        self.redis.hincrby(f"{self.prefix}:stats", name, 1)

    def state(self, route: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.redis.hgetall(self._breaker(route)).items()}

    def pause(self, route: str, seconds: float) -> None:
        """Hold every worker's writes to ``route`` for ``seconds`` (from now), at most ``max_pause_s``."""
        ms = int(min(seconds, self.max_pause_s) * 1000)
        if ms > 0:
            self._throttle(keys=[self._gate(route)], args=[now_ms() + ms, ms])

    def paused_for(self, route: str) -> float:
        """Seconds left before writes to ``route`` may go again (0 when not paused), at most
        ``max_pause_s`` even if a longer pause was stored (by an older version, or a larger setting)."""
        return min(self._stored_pause(route), self.max_pause_s)

    def _stored_pause(self, route: str) -> float:
        resume = self.redis.get(self._gate(route))
        return max(int(str(resume)) - now_ms(), 0) / 1000 if resume else 0.0

    def states(self, routes: Iterable[str]) -> list[RouteState]:
        """The breaker and pause of each route, read without changing them (``allow`` would take a
        probe's turn)."""
        out = []
        for route in routes:
            b = self.state(route)
            open_for = max(int(float(b.get("open_until", 0))) - now_ms(), 0) / 1000
            breaker = b.get("state", "closed")
            if breaker == "open" and not open_for:
                breaker = "probing"
            out.append(
                RouteState(
                    route=route,
                    breaker=breaker,
                    failures=int(b.get("failures", 0)),
                    kind=b.get("kind", ""),
                    reason=b.get("reason", ""),
                    open_for_s=open_for,
                    paused_for_s=self._stored_pause(route),
                )
            )
        return out

    def clear(self, route: str) -> int:
        """Close the route's breaker and lift its pause; the number of keys deleted (0, 1 or 2)."""
        return int(self.redis.delete(self._breaker(route), self._gate(route)))

    def known_routes(self) -> list[str]:
        """Routes that have a breaker or a pause in Redis (also ones no longer configured)."""
        names: set[str] = set()
        for kind in ("breaker", "throttle"):
            start = len(f"{self.prefix}:{kind}:")
            names.update(str(k)[start:] for k in self.redis.scan_iter(f"{self.prefix}:{kind}:*", count=1000))
        return sorted(names)
