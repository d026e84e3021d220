"""A circuit breaker and a throttle per route, shared by every worker process on every node via Redis.

Breaker: after ``threshold`` consecutive failed writes to a route (any worker), the route is *open*
for ``cooldown_s``: work for it is deferred (transient failures) or dead-lettered at once (permanent
ones: a wrong token does not fix itself, and hammering the server helps nobody). After the cool-down
exactly one probe is let through cluster-wide; its success closes the breaker, its failure re-opens it.

Throttle: when a route answers 429 or 503 with Retry-After, every worker holds its writes to that
route until then, not just the one that was told (telegraf#9353 logged "retry in 0s" after a 429).
It is a pause-until gate, the degenerate token bucket whose refill is the server's Retry-After.

Why not pybreaker's ``CircuitRedisStorage``: its transitions take several Redis round trips, so N
processes reaching half-open together all probe; here each transition is one Lua script.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

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


class RouteGuard:
    """The breaker and throttle of every route, keyed under ``<prefix>:breaker:`` and ``:throttle:``."""

    def __init__(self, client: redis.Redis, *, prefix: str, threshold: int, cooldown_s: float) -> None:
        self.redis = client
        self.prefix = prefix
        self.threshold = threshold
        self.cooldown_ms = int(cooldown_s * 1000)
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
        """Hold every worker's writes to ``route`` for ``seconds`` (from now)."""
        ms = int(seconds * 1000)
        if ms > 0:
            self._throttle(keys=[self._gate(route)], args=[now_ms() + ms, ms])

    def paused_for(self, route: str) -> float:
        """Seconds left before writes to ``route`` may go again (0 when not paused)."""
        resume = self.redis.get(self._gate(route))
        return max(int(str(resume)) - now_ms(), 0) / 1000 if resume else 0.0
