// tsbatch copy: the raw points of one window [start, stop), written into another bucket
from(bucket: "telemetry")
    |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-02T00:00:00Z)
    |> filter(fn: (r) => r._measurement == "cpu")
    |> filter(fn: (r) => r._field == "usage" or r._field == "temp")
    |> filter(fn: (r) => r["host"] == "edge-1" and r["region"] == "eu")
    |> to(bucket: "telemetry_5m", org: "acme")
