// tsbatch read: the raw points of one window [start, stop)
from(bucket: $bucket)
    |> range(start: $start, stop: $stop)$filters
