// tsbatch read: the raw points of one window [start, stop)
from(bucket: "telemetry")
    |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-01T01:00:00Z)
    |> filter(fn: (r) => r._measurement == "cpu")
