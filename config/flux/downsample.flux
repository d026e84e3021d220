// tsbatch downsample: one window [start, stop), one point per series and aggregate, stamped at start
data = from(bucket: $bucket)
    |> range(start: $start, stop: $stop)$filters

$aggregates

$result$rename
    |> to(bucket: $target_bucket, org: $org)
