"""Defaults, each with the reason it has the value it has.

Every tunable here is also a setting (see ``config.settings``); these are only the starting points.
"""

from typing import Final

SCHEMA_VERSION: Final = 1
"""Version of the chunk-descriptor schema. A worker dead-letters descriptors of any other version."""

CHUNK_LINES: Final = 200_000
"""Lines per chunk: ~14 MB of typical line protocol, about half a second of one process's work. Each
chunk costs ~10 ms between chunks (Celery's ack, fetch and dispatch; claim; commit): once the hot path
was 2.5x faster, that was 3.6-4.6% of worker time at 100k lines and 1.8-2.9% at 200k (scripts/bench.py
overhead, 2M-line file). A redelivery repeats at most this much."""

TAPER: Final = True
"""A file's last two chunks' worth is planned as chunks of 1/2, 1/4 and 1/8 (producers/planner.py):
without it, one process finished its last whole chunk alone while the other idled, 2.9% of worker
time on a 2M-line file. It costs 2-3 extra chunks a file (~10 ms each)."""

BATCH_LINES: Final = 5_000
"""Lines per HTTP write: InfluxDB's documented optimum for /api/v2/write (5,000 lines)."""

COLUMNAR: Final = True
"""CSV and JSON Lines chunks are first tried by pyarrow's readers, column by column (workers/columnar.py);
a chunk that path cannot take whole goes to the row path. A 200,000-row chunk: CSV 1,111 -> 605 ns a row,
JSON Lines 4,437 -> 1,114; `tsbatch produce` of 1M CSV rows, 2 worker processes, best runs: 499k -> 701k
points/s in one session, 692k -> 704k in another (the write side on the same 2 cores bounds it; noisy
machine; scripts/columnar_bench.py, 2026-12-02). Off: the row path alone, as before issue 12."""

WRITES_IN_FLIGHT: Final = 4
"""Concurrent writes per worker process (the asyncio.Semaphore bound)."""

GZIP_LEVEL: Final = 1
"""Levels 1-3 use ISA-L's igzip: level 1 compresses ~1 GB/s with a ratio of 7.9, against zlib's
~200 MB/s (ratio 6.1) at level 1 and ~12 MB/s at level 9 (influxdb-client's enable_gzip), which made
end-to-end ingest 3x slower. Levels 4-9 use zlib."""

WRITE_TIMEOUT_S: Final = 30.0
"""Per-request timeout. InfluxDB answers a 5,000-line write in milliseconds; 30 s covers compactions."""

LEASE_TTL_S: Final = 60.0
"""A claim on a chunk expires this long after its last heartbeat; the outbox sweeper then publishes the
chunk again, so a SIGKILLed worker's chunk is taken over within this plus ``SWEEP_INTERVAL_S`` instead of
the broker's visibility timeout (celery-once#147)."""

HEARTBEAT_S: Final = 10.0
"""Lease renewal period: six renewals may fail before a live worker's lease lapses."""

VISIBILITY_TIMEOUT_S: Final = 3_600
"""Redis transport redelivers an unacknowledged message after this long (celery#5935). It must exceed
the longest chunk and the longest retry countdown; the ledger's lease fences any early redelivery. Only a
backstop: the outbox sweeper recovers a dead node's chunks within a lease and a sweep."""

UNACKED_RESTORE_INTERVAL_S: Final = 60
"""How often a worker sweeps Redis for unacked messages older than the visibility timeout. kombu's
default (10 s x throttle 10) checks every ~100 s; one scan a minute is cheap and recovers sooner."""

MAX_LINE_BYTES: Final = 1 << 20
"""Lines longer than 1 MiB are rejected: InfluxDB refuses them too, and they signal a corrupt file."""

MAX_QUEUE_DEPTH: Final = 2_000
"""The producer pauses while the queue holds more descriptors than this: ~100M lines of work queued
is plenty to keep any cluster busy, and Redis memory stays bounded (descriptors are ~1 KB)."""

MAX_CHUNK_BYTES: Final = 64 << 20
"""A chunk is cut at this many bytes even before ``chunk_lines``, and a worker refuses a descriptor whose
range is larger: a worker holds its chunk in memory, so ``chunk_lines`` x 1 MiB lines (or a forged
``end``) must not be able to kill it. 64 MiB is ~4x a typical 200,000-line chunk."""

PREFLIGHT_ROWS: Final = 1_000
"""Records of each file the producer maps before enqueueing it (issue 12): a wrong --time-format,
--timezone or --delimiter fails on every one of them, so the job stops before 1,461 rows fill the
dead-letter queue; 1,000 rows of 1 KiB are read and mapped in about 10 ms, at most 1 MiB per file."""

MAX_ATTEMPTS: Final = 12
"""Claims of one unit before it is dead-lettered as ``poison``: a unit that kills its process (OOM,
segfault) never reaches a commit or a Celery retry, so only this durable count in the ledger stops it.
Above ``max_retries`` (8) so that transient failures are dead-lettered as such first."""

LEDGER_RETENTION_DAYS: Final = 90
"""Committed and dead-lettered unit records expire after this many days, so Redis does not grow without
bound. A rerun after that does the work again: the same points overwrite themselves in InfluxDB."""

DLQ_MAXLEN: Final = 100_000
"""Approximate cap of the dead-letter stream (XADD MAXLEN ~): ~100 MB at most with RAW_KEEP_BYTES.
Trimmed entries are counted (stats ``dlq_trimmed``) and ``tsbatch dlq list`` warns about them."""

RAW_KEEP_BYTES: Final = 4_096
"""How much of a rejected line's text the DLQ keeps, beside the whole line's length and SHA-256: a wrong
``--format`` rejects every line of a file, and each used to keep up to 64 KiB."""

REPUBLISH_AFTER_S: Final = 60.0
"""How long a published unit may wait unclaimed before the sweeper publishes it again (its message was
lost: an interrupted producer, a node that died holding it). A duplicate message is harmless (it meets
the claim) but costs a round trip, so this is well above a chunk's ~0.5 s in a worker's hands."""

LEASE_GRACE_S: Final = 1.0
"""The sweeper looks at a claimed unit this long after its lease could have lapsed. A lapsed lease
cannot be renewed by its holder (renew.lua extends only a live one), so waiting longer gains nothing:
the chaos scenario worker-kill measured 24 s from a SIGKILL to the commit with a grace of one lease
(10 s), where lease + sweep interval is 15 s; a lease still alive at a look was looked at again only
after ``republish_after_s`` (60 s) more."""

SWEEP_INTERVAL_S: Final = 5.0
"""How often each worker's main process sweeps the outbox: a unit whose holder died is published
again within ``lease_ttl_s`` + ``LEASE_GRACE_S`` plus this. One Lua call per sweep."""

PLANNING_STALE_S: Final = 30.0
"""A job still planning whose producer has not been heard from for this long was interrupted (SIGKILL)."""

TASK_MAX_RETRIES: Final = 8
"""Celery retries of a chunk before it is dead-lettered: with a 300 s cap that is ~20 min of outage."""

RETRY_BASE_S: Final = 2.0
RETRY_MAX_S: Final = 300.0
"""Exponential backoff with full jitter between task retries, capped so no countdown nears the
visibility timeout."""

BATCH_RETRIES: Final = 3
"""Fast retries of one batch inside the task before the chunk is handed back to Celery: rides out a
blip (a reset, one 503) without giving up the chunk's lease and re-reading it."""

BATCH_RETRY_MAX_WAIT_S: Final = 10.0
"""Longest wait a task spends on an in-task retry; a longer Retry-After frees the worker slot and
comes back as a Celery retry with that countdown."""

RETRY_AFTER_MAX_S: Final = 300.0
"""Longest Retry-After honoured (the pause of a route and the floor of a retry's countdown): a server's
"Retry-After: 99999999" would otherwise stop a route cluster-wide for years and turn into a countdown far
beyond the visibility timeout (issue #8); 5 minutes is as long as the backoff itself waits."""

BREAKER_THRESHOLD: Final = 5
"""Consecutive failed writes to a route, counted across every worker, that open its breaker."""

BREAKER_COOLDOWN_S: Final = 30.0
"""How long an open breaker rejects work before one probe is let through."""

READ_TIMEOUT_S: Final = 300.0
"""Timeout of one window's read (a Flux query or a VictoriaMetrics export). influxdb-client's default of
10 s is far too short for a window of raw points; a window longer than this should be made shorter."""

TICK_S: Final = 10.0
"""How often ``tsbatch beat`` sends the scheduler tick: a window is planned at most this long after it is
due (its end + the job's offset). Each tick is one cheap pass over the jobs' watermarks."""

MAX_WINDOWS_PER_TICK: Final = 100
"""Windows planned per job and tick: after a long downtime the backlog is planned oldest first, 100 every
tick (600 a minute at the default tick), so the queue never fills with one job's years of windows."""

EXPIRY_WARNING_S: Final = 86_400
"""``tsbatch jobs`` warns about a window not yet archived that its bucket's retention drops within a day:
time for a person to see it and for the archive job to catch up."""

MIN_BUCKET_RETENTION_S: Final = 3600
"""InfluxDB 2 refuses a bucket retention under one hour ("retention policy duration must be at least 1h0m0s");
0 keeps data for ever."""

ADMIN_TIMEOUT_S: Final = 30.0
"""Timeout of one request to the orgs/buckets API (``tsbatch buckets``): small JSON answers, but a busy
server's metadata store can be slow; a person waits at most this per request."""

READ_BLOCK_BYTES: Final = 1 << 20
"""Producer read size while scanning for line boundaries: memory stays flat at ~1 MiB a file."""

METRICS_REAP_INTERVAL_S: Final = 2.0
"""How often a worker's main process looks for pool children that died (by any means, SIGKILL included)
and folds their metric files into one aggregate (workers/reaper.py): one directory listing and a
/proc read per child. A dead child's gauges stop counting within this long; scrapes come every 15 s."""

LOOP_PROBE_INTERVAL_S: Final = 0.1
"""Sleep of the event-loop lag probe (workers/loopprobe.py): ten wake-ups a second while a task runs,
each a few microseconds; a callback that holds the loop for longer than this shows as lag."""

LOOP_LAG_WINDOW_S: Final = 60.0
"""``tsbatch_event_loop_lag_max_seconds`` is the largest lag seen in the last one to two of these:
long enough for a 15 s scrape not to miss a stall, short enough to fall back once it is over."""

METRICS_RECENT_JOBS: Final = 100
"""Jobs (newest first) whose progress a scrape reads from the ledger for ``tsbatch_job_lag_seconds``:
one HGETALL each, so a scrape stays in milliseconds however many jobs the ledger remembers."""

QUEUE: Final = "tsbatch.chunks"
KEY_PREFIX: Final = "tsbatch"
