// tsbatch downsample: one window [start, stop), one point per series and aggregate, stamped at start
data = from(bucket: "telemetry")
    |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-01T00:01:30Z)
    |> filter(fn: (r) => r._measurement == "cpu")
    |> filter(fn: (r) => r._field == "usage" or r._field == "temp")

aggP95 = data
    |> aggregateWindow(every: 1m30s, fn: (column, tables=<-) => tables |> quantile(q: 0.95, column: column, method: "exact_mean"), createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_p95"}))

aggP95
    |> to(bucket: "telemetry_5m", org: "acme")
