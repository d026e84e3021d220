"""The route breaker and throttle live in ``tsbatch.breaker`` (the CLI reads and clears them without
loading the write stack); re-exported here for the worker's modules."""

from tsbatch.breaker import RouteGuard, RouteState, Verdict

__all__ = ["RouteGuard", "RouteState", "Verdict"]
