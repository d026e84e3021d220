// tsbatch downsample: one window [start, stop), one point per series and aggregate, stamped at start
data = from(bucket: "telemetry")
    |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-01T00:05:00Z)
    |> filter(fn: (r) => r._measurement == "cpu")
    |> filter(fn: (r) => r._field == "usage" or r._field == "temp")
    |> filter(fn: (r) => r["host"] == "edge-1" and r["region"] == "eu")

aggMean = data
    |> aggregateWindow(every: 5m, fn: mean, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_mean"}))

aggMin = data
    |> aggregateWindow(every: 5m, fn: min, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_min"}))

aggMax = data
    |> aggregateWindow(every: 5m, fn: max, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_max"}))

aggCount = data
    |> aggregateWindow(every: 5m, fn: count, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_count"}))

aggSum = data
    |> aggregateWindow(every: 5m, fn: sum, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_sum"}))

aggFirst = data
    |> aggregateWindow(every: 5m, fn: first, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_first"}))

aggLast = data
    |> aggregateWindow(every: 5m, fn: last, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_last"}))

aggStddev = data
    |> aggregateWindow(every: 5m, fn: stddev, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_stddev"}))

aggP50 = data
    |> aggregateWindow(every: 5m, fn: (column, tables=<-) => tables |> quantile(q: 0.5, column: column, method: "exact_mean"), createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_p50"}))

aggP90 = data
    |> aggregateWindow(every: 5m, fn: (column, tables=<-) => tables |> quantile(q: 0.9, column: column, method: "exact_mean"), createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_p90"}))

aggP95 = data
    |> aggregateWindow(every: 5m, fn: (column, tables=<-) => tables |> quantile(q: 0.95, column: column, method: "exact_mean"), createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_p95"}))

aggP99 = data
    |> aggregateWindow(every: 5m, fn: (column, tables=<-) => tables |> quantile(q: 0.99, column: column, method: "exact_mean"), createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + "_p99"}))

union(tables: [aggMean, aggMin, aggMax, aggCount, aggSum, aggFirst, aggLast, aggStddev, aggP50, aggP90, aggP95, aggP99])
    |> set(key: "_measurement", value: "cpu_5m")
    |> to(bucket: "telemetry_5m", org: "acme")
