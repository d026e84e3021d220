"""kombu's Redis transport, made to ride out Redis refusing writes (OOM under ``noeviction``).

kombu counts ``redis.ResponseError`` as a channel error, which stopped the worker for good ("Unrecoverable
error: server:OutOfMemoryError"); ``broker_channel_error_retry`` (tsbatch/envelope.py) makes the consumer
reconnect instead. What remains is here: a refused ack or reject left the message among the channel's
delivered ones, so with a prefetch of one the worker never fetched again (seen: a worker idle after the
memory was freed, "Couldn't reject ... server:OutOfMemoryError"). Here the delivery slot is freed whatever
Redis says; the message stays in Redis's unacked set (restored after the visibility timeout) and, more
to the point, its unit stays in the ledger's outbox until it is committed, so the sweeper publishes it
again if need be. A copy that arrives after the commit meets the claim and is acked.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import OutOfMemoryError

TRANSPORT = "tsbatch.transport:Transport"
log = logging.getLogger("tsbatch.transport")


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: Any) -> None:
        self._forget(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            super().reject(delivery_tag, requeue=True)
        else:
            self._forget(delivery_tag)

    def _forget(self, delivery_tag: Any) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        except OutOfMemoryError as e:
            log.warning("could not ack a message (%s): the ledger's outbox still holds its unit", e)
        virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
