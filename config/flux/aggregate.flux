$name = data
    |> aggregateWindow(every: $every, fn: $fn, createEmpty: false, timeSrc: "_start")
    |> map(fn: (r) => ({r with _field: r._field + $suffix}))
