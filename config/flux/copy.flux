// tsbatch copy: the raw points of one window [start, stop), written into another bucket
from(bucket: $bucket)
    |> range(start: $start, stop: $stop)$filters$rename
    |> to(bucket: $target_bucket, org: $org)
