"""RabbitMQ (AMQP 0-9-1) broker: quorum queues, publisher confirms, and one I/O thread.

Why one I/O thread. pika is not thread-safe, the worker calls its broker from two threads
(fetch and settle from the main thread, extend and heartbeat from the keeper), and above
all a solo task blocks the main thread for as long as it runs. If the connection were
driven from the main thread, nobody would answer RabbitMQ's heartbeats during a long task,
the server would close the connection, the ack would fail and the task would run again
(Celery's solo pool). So a `Link` thread owns the connection and does all pika work; the
public methods hand it a closure (`add_callback_threadsafe` wakes it) and wait for the
answer. Heartbeats flow whatever the main thread does, unless it holds the GIL in C code.
The exception is a worker's ack, sent once per task: while the I/O thread waits for I/O
with nothing else to do, it lets go of the connection (`Link.here`), and the caller
writes the ack to the socket itself rather than pay two thread switches.

Topology, per logical queue Q (these suffixes are reserved):

* ``Q`` and, with ``?max_priority=N``, ``Q.p1`` … ``Q.pN``: the work queues ("lanes"), one
  per priority, because quorum queues have no priorities on RabbitMQ 3.10. All are quorum
  queues (durable, replicated, `x-delivery-count`), with ``x-delivery-limit`` =
  max_deliveries - 1 (RabbitMQ dead-letters once the count of returns exceeds it) and
  dead-lettering to ``Q.dead`` with the at-least-once strategy (which requires
  ``x-overflow: reject-publish``; no length limit is set, so nothing is rejected).
* ``Q.dead``: the dead-letter store, a quorum queue read with basic.get.
* ``<lane>.delay.<ms>``: delayed and retried messages wait here, not in a worker: a durable
  classic queue with ``x-message-ttl`` = ms that dead-letters back to its lane when the
  TTL runs out. Delays are rounded up to two significant digits (at most 10 % late) so the
  number of delay queues stays bounded; each expires (``x-expires``) once unused. Classic,
  because there can be many and a quorum queue holds three file handles for good (3.10),
  while a classic one holds one that the server can close when idle. The server has no
  delayed-message exchange plugin, and per-message TTL in one shared queue would make a
  short delay wait behind a long one.
* ``soloist.workers``: worker heartbeats, a non-durable classic queue of messages that
  expire after their ttl; `workers()` keeps the newest per worker and drops the rest.
* ``soloist.schema.<version>``: a durable fanout exchange naming this layout's version
  (schema.py); a later layout supersedes it, and a broker refuses a superseded one.
* ``<name>.lock``: an exclusive queue, declared while one operator browses ``Q.dead`` or
  ``soloist.workers`` with basic.get (what one browser holds, another cannot see). Only
  one connection can hold an exclusive queue, and it vanishes with that connection.

Messages are persistent and carry `message_id` plus the headers named `H_*` below. Every
publish waits for its confirm (`mandatory`, so a publish to a missing queue fails), except
the copies a settle makes (retry, dead-letter, give back): those go out on the consuming
channel, which is transactional, in one commit with the ack of their original.

Leases and fencing. A delivery's lease is its channel's life: RabbitMQ returns unacked
messages when the channel or connection dies (the quorum queue then raises the count), so
`extend` is a liveness check and `lease` values are not used; a lost run (`abandon`) is
given back at once as a copy with the count raised. The receipt is (channel
epoch, delivery tag); a settle with a receipt of a dead channel returns False without
touching the wire. An ack counts at the commit that follows it, and returns True only
once the server has answered that commit (AMQP acks have no reply).
RabbitMQ's `consumer_timeout` (30 min by default) closes a channel that holds a delivery
longer: its deliveries are returned and run again, the late ack returns False, and this
broker opens a fresh channel. Set it above your longest task (docs/brokers.md).
"""

from __future__ import annotations

from .broker import AMQPBroker
from .wire import OPTIONS

__all__ = ["OPTIONS", "AMQPBroker"]
