"""tsbatch: distributed, exactly-once batch ingestion of time-series files into InfluxDB v2.

The shared contract lives here: the chunk descriptor and its idempotency key, the Redis ledger, the
exception hierarchy and source confinement. ``producers`` plans and enqueues, ``workers`` executes,
``config`` configures.
"""

from tsbatch.descriptor import ChunkDescriptor, DescriptorError, FieldSpec, Mapping, parse_descriptor
from tsbatch.errors import (
    LeaseLost,
    PermanentWriteError,
    SourceError,
    TransientWriteError,
    TsbatchError,
    WriteError,
)
from tsbatch.ledger import JobStatus, Ledger

__all__ = [
    "ChunkDescriptor",
    "DescriptorError",
    "FieldSpec",
    "JobStatus",
    "LeaseLost",
    "Ledger",
    "Mapping",
    "PermanentWriteError",
    "SourceError",
    "TransientWriteError",
    "TsbatchError",
    "WriteError",
    "parse_descriptor",
]
