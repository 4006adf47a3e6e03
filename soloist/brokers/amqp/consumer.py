"""The consume state machine: handing out deliveries from one lane's stream or a sweep of
several lanes, giving back what was pushed and not taken, and the channel-level settles
(acks, moves) its deliveries end with. It runs on the I/O thread, on a `Session`."""

from __future__ import annotations

import math
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pika.exceptions as pe
from pika import frame, spec

from ..base import Delivery, poison_reason
from .session import LATER, Held, Request, Session, Stream, Taker, Wait
from .topology import Topology
from .wire import H_COUNT, H_DEAD_AT, H_PRIOR, H_REASON, H_RETRIES, Out

#: A caller that fetches again within this many seconds drains its batches this fast, so
#: the lane's consumer may run one batch ahead of it (`Consumer.stream`); the worker's
#: adaptive prefetch holds about as much work (PREFETCH_HORIZON).
AHEAD = 0.05
#: With an ack pipe (a commit per task), at most this many deliveries of one queue from
#: one fetch, and pushed ahead of what the caller holds (`Consumer.window`). RabbitMQ
#: answers tx.commit once the channel has taken the acks, not once the quorum queue has
#: applied them; and a channel that sent a command to a queue with 32 of its commands not
#: yet applied (rabbit_fifo_client's soft limit) holds that queue's further settles back,
#: unsent, until the queue catches up. A connection that dies meanwhile (a SIGKILLed
#: worker) loses them, and the queue gives back messages whose acks `collect` confirmed.
#: A commit per task is a settle command per task; basic.get, basic.consume and
#: basic.cancel wait until the queue has applied what came before, and so does a commit
#: that carries copies (give-back, retry, dead letter). In between, a solo worker has at
#: most 2 x WINDOW deliveries out (what a fetch took by basic.get and its consumer's
#: prefetch), acked one by one or some given back or moved in one commit (a copy each
#: and one settle): 2 x WINDOW + 1 = 31 commands, within the limit, so a confirmed ack
#: holds (test_amqp.py; 34 acks lose one). A pool running more than about 15 tasks of
#: one queue at once can pass it. (A batch of acks is one command.)
WINDOW = 15


class Consumer:
    """Fetching and the settles below the broker's: all on the I/O thread."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        #: The most deliveries of one queue a fetch hands out, and a consumer's prefetch
        #: beyond those held: WINDOW once acks are committed one by one (`ack_pipe`).
        self.window = math.inf

    def stream(
        self, s: Session, req: Request, queue: str, lane: str, count: int, until: float
    ) -> object:
        """Hand out what the lane's consumer pushed, up to `count`, or wait for a push.

        With no consumer yet, the batch is taken by basic.get (exact: whatever is ready,
        up to `count`, as on several lanes), and one is started for the next batches (or
        to wait on), unless the lane was empty and the caller does not wait.

        Its prefetch follows `count` plus what the caller still holds (a pool fetches for
        its free slots while tasks run), plus `count` again when the caller asks for more
        than one and came back within AHEAD seconds: then the server pushes the next
        batch while this one runs, instead of after its acks (a round trip and the quorum
        queue's commit, during which the caller would wait, or a burst worker would think
        the lane empty). A slow caller, or one taking one at a time (`--prefetch 1`), gets
        no more than it asks for. A different prefetch (more, or at most half) is applied
        at the next settle, by `resize`."""
        count = int(min(count, self.window))
        self.end_waits(s)
        st = s.stream
        if st is not None and st.lane != lane:
            self.end_stream(s)
            st = None
        s.conn.process_data_events(time_limit=0)  # dispatch pushes already received
        if st is not None and st.tag is not None and st.tag not in s.sub.consumer_tags:
            # The server cancelled it: its queue was deleted. Declare it again.
            st.tag = None
            s.declared.pop(queue, None)
        self.topology.declare(s, queue)
        if st is None:
            st = s.stream = Stream(queue, lane)
        now = time.monotonic()
        ahead = count if count > 1 and now - st.fetched < AHEAD else 0
        want = int(min(count + ahead, self.window)) + len(s.held)
        st.fetched = now
        out: list[Delivery] = []
        if st.tag is None:
            if not st.buffer:  # else it ended: hand out what it had, then start afresh
                self.get(s, out, queue, lane, count)
                if not out and time.monotonic() >= until:
                    return out  # nothing ready, and no wait: no consumer needed yet
                self.consume(s, st, want)
        elif want > st.prefetch or want <= st.prefetch // 2:
            st.resize, st.keep = want, count
            if want > st.prefetch and st.full():
                self.resize(s)  # nothing in flight, and the caller waits for more
        else:
            st.resize = 0
        while st.buffer and len(out) < count:
            self.hand_out(s, out, queue, lane, *st.buffer.popleft())
        if not out and time.monotonic() >= until and st.tag is not None and not st.full():
            # Not waiting: still, what the server already pushed (say, the refill after
            # the last acks) is in flight. One round trip on this channel lets it land.
            self.confirm_acks(s)
            s.conn.process_data_events(time_limit=0)
            while st.buffer and len(out) < count:
                self.hand_out(s, out, queue, lane, *st.buffer.popleft())
        if out or time.monotonic() >= until:
            return out
        s.wait = Wait(req, until, lambda: bool(st.buffer))
        return LATER

    def consume(self, s: Session, st: Stream, prefetch: int) -> None:
        mine = st.mine = set()

        def take(method: Any, props: Any, body: bytes) -> None:
            st.buffer.append((method, props, body))
            mine.add(method.delivery_tag)

        s.sub.basic_qos(prefetch_count=prefetch)  # applies to the consumer started next
        st.tag = s.sub.basic_consume(st.lane, on_message(take))
        st.take = take
        st.prefetch, st.resize = prefetch, 0

    def resize(self, s: Session) -> None:
        """Before a settle, give the stream the prefetch its fetches asked for: cancel the
        consumer and start one with the new prefetch. Its buffer is handed out first,
        so the lane's order holds; on shrinking, what it holds beyond the last fetch's
        count goes back, so a worker that slowed down does not sit on messages others
        could run.

        Here rather than at the fetch: the acks that follow make room that the server
        fills at once, for the old consumer. Before the acks, the consumer is full when
        the lane is busy (nothing in flight). Growing waits for that (below it, the lane
        is drained and a larger prefetch would not help), and for its buffer to be handed
        out: what the old consumer still buffers would be held on top of the new prefetch
        (which counts only what the caller holds). Shrinking does not wait."""
        st = s.stream
        if st is None or not st.resize or st.tag is None:
            return
        want, growing = st.resize, st.resize > st.prefetch
        if growing and (st.buffer or not st.full()):
            return
        self.cancel(s, st)
        excess = [] if growing else [self.kept(st, e) for e in list(st.buffer)[st.keep :]]
        for _ in excess:
            st.buffer.pop()
        self.consume(s, st, want)
        self.give_back(s, excess)

    def kept(self, st: Stream, entry: tuple[Any, Any, bytes]) -> tuple[int, Held, bytes]:
        method, props, body = entry
        return method.delivery_tag, self.held(st.queue, st.lane, props), body

    def cancel(self, s: Session, st: Stream) -> None:
        """Stop the stream's consumer; what it pushed before the cancel-ok is buffered."""
        # (Deleting its queue cancels a consumer too.)
        if st.tag is not None and s.sub.is_open and st.tag in s.sub.consumer_tags:
            self.cancel_consumers(s, {st.tag: st.take})
        st.tag = None

    def cancel_consumers(self, s: Session, takers: dict[str, Taker]) -> None:
        """Cancel consumers of `sub`; a delivery reaching one before the server's
        cancel-ok goes to its taker (`Session.takers`), not back to the queue counted."""
        s.conn.process_data_events(time_limit=0)  # pika rejects what it holds undispatched
        s.takers.update(takers)
        try:
            for tag in takers:
                s.sub.basic_cancel(tag)
        finally:
            for tag in takers:
                del s.takers[tag]

    def end_stream(self, s: Session) -> None:
        """Cancel the stream and give back what it pushed that no fetch took."""
        st = s.stream
        if st is None:
            return
        s.end_wait()
        self.cancel(s, st)
        kept = [self.kept(st, entry) for entry in st.buffer]
        st.buffer.clear()
        s.stream = None
        self.give_back(s, kept)

    def end_waits(self, s: Session) -> None:
        """Cancel the idle-wait consumers of `sweep` and give back what they pushed."""
        if not s.consumers and not s.pushed:
            return
        s.conn.process_data_events(time_limit=0)
        self.cancel_waits(s)
        queue_of = {lane: queue for queue in s.declared for lane in self.topology.lanes(queue)}
        pushed, s.pushed = s.pushed, []
        self.give_back(
            s,
            [
                (method.delivery_tag, self.held(queue_of.get(lane, lane), lane, props), body)
                for lane, method, props, body in pushed
            ],
        )

    def cancel_waits(self, s: Session) -> None:
        """Cancel the idle-wait consumers; what they pushed stays in `s.pushed`."""
        if s.consumers:
            self.cancel_consumers(
                s, {tag: self.pusher(s, lane) for tag, lane in s.consumers.items()}
            )
        s.consumers.clear()

    @staticmethod
    def pusher(s: Session, lane: str) -> Taker:
        """What takes an idle-wait consumer's deliveries: `s.pushed`, by lane."""
        return lambda method, props, body: s.pushed.append((lane, method, props, body))

    def give_back(
        self, s: Session, kept: Sequence[tuple[int, Held, bytes]], counted: bool = False
    ) -> None:
        """Put deliveries back unstarted, as if never delivered: publish copies that carry
        the count so far and ack the originals, in one transaction of `sub` (a basic.nack
        would raise the quorum queue's count before RabbitMQ 4.3, and a message given back
        often would look like poison). A holder killed before the commit leaves the
        originals, after it the copies; never both. The copies go to the back of their
        lanes. `counted`: a lost run, whose delivery counts (a copy handed out past
        max_deliveries is dead-lettered by `hand_out`)."""
        if not kept:
            return
        outs = [
            Out(
                h.queue,
                h.lane,
                body,
                h.message_id,
                h.copy_headers({H_PRIOR: h.count - 1 + counted}),
            )
            for _, h, body in kept
        ]
        self.transfer(s, outs, [tag for tag, _, _ in kept])

    def transfer(self, s: Session, outs: Sequence[Out], tags: Sequence[int]) -> None:
        """Publish `outs` and ack `tags` in one transaction of `sub`, and wait for its
        commit: a holder killed before the commit leaves the originals, after it the
        copies; never both. Only this thread writes on `sub`, so no other commit can fall
        between the copies and the acks.

        Inside a transaction a quorum queue over a length limit (an operator's
        `max-length` policy; our lanes set `x-overflow: reject-publish`) drops the copy
        without a word and the commit succeeds; a classic one fails the commit, closing
        `sub`, with the acks applied. Either way the message is gone: Soloist's queues
        must have no length limit (none is set)."""
        targets = [self.topology.target(s, out) for out in outs]  # declared on `pub`
        s.returned.clear()
        for out, target in zip(outs, targets, strict=True):
            s.sub._impl.basic_publish(
                "", target, out.body, self.topology.props(out), mandatory=True
            )
        self.write_acks(s, tags)
        self.confirm_acks(s)
        # A queue deleted since we declared it (by an operator, or a delay queue that
        # expired) returns the copy before the commit-ok: this dispatches those returns,
        # and `send` declares it again and publishes it confirmed. (Killed right here,
        # such a copy would be lost: the one case where the original is acked first.)
        s.conn.process_data_events(time_limit=0)
        for out in outs:
            if out.message_id in s.returned:
                self.topology.send(s, out)

    def sweep(
        self,
        s: Session,
        req: Request,
        lanes: list[tuple[str, str]],
        count: int,
        until: float,
    ) -> object:
        """basic.get over the lanes in order; when all are empty, wait for a push."""
        self.end_stream(s)
        got = self.take(s, lanes, int(min(count, self.window)))
        if got or time.monotonic() >= until:
            return got
        return self.wait(s, req, lanes, until)

    def take(self, s: Session, lanes: list[tuple[str, str]], max_count: int) -> list[Delivery]:
        for q in dict.fromkeys(q for q, _ in lanes):
            self.topology.declare(s, q)
        wanted = {lane for _, lane in lanes}
        if s.consumers:
            s.conn.process_data_events(time_limit=0)  # dispatch pushes already received
            if set(s.consumers.values()) == wanted and not any(p[0] in wanted for p in s.pushed):
                # Still idle: the consumers would have pushed anything waiting (prefetch
                # 1 each), so no basic.get sweep; keep them for the next wait.
                return []
            self.cancel_waits(s)
        out: list[Delivery] = []
        order = {lane: i for i, (_, lane) in enumerate(lanes)}
        queue_of = dict((lane, q) for q, lane in lanes)
        s.pushed.sort(key=lambda p: order.get(p[0], len(order)))
        keep = []
        for lane, method, props, body in s.pushed:
            if lane in order and len(out) < max_count:
                self.hand_out(s, out, queue_of[lane], lane, method, props, body)
            else:
                keep.append((lane, method, props, body))
        s.pushed = keep
        for q, lane in lanes:
            self.get(s, out, q, lane, max_count)
        return out

    def get(self, s: Session, out: list[Delivery], queue: str, lane: str, count: int) -> None:
        """basic.get from `lane` into `out` until it holds `count` or the lane is empty."""
        while len(out) < count:
            method, props, body = s.sub.basic_get(lane)
            if method is None:
                return
            self.hand_out(s, out, queue, lane, method, props, body)

    def held(self, queue: str, lane: str, props: Any) -> Held:
        headers = props.headers or {}
        count = int(headers.get("x-delivery-count", 0)) + int(headers.get(H_PRIOR, 0)) + 1
        retries = int(headers.get(H_RETRIES, 0))
        return Held(queue, lane, props.message_id or uuid.uuid4().hex, headers, count, retries)

    def hand_out(
        self,
        s: Session,
        out: list[Delivery],
        queue: str,
        lane: str,
        method: Any,
        props: Any,
        body: bytes,
    ) -> None:
        tag = method.delivery_tag
        held = s.held[tag] = self.held(queue, lane, props)
        if held.count > self.topology.max_deliveries:
            # Only a released copy gets here (the queue's own limit counts from the copy).
            self.move(s, tag, f"{queue}.dead", body, self.dead_headers(held, held.count))
            return
        out.append(Delivery(held.message_id, queue, body, held.count, held.retries, (s.epoch, tag)))

    def wait(self, s: Session, req: Request, lanes: list[tuple[str, str]], until: float) -> object:
        """Consumers on every lane (prefetch 1 each); a push runs the fetch again."""
        if not s.consumers:
            s.sub.basic_qos(prefetch_count=1)  # applies to the consumers started next
            for _, lane in lanes:
                tag = s.sub.basic_consume(lane, on_message(self.pusher(s, lane)))
                s.consumers[tag] = lane
        wanted = {lane for _, lane in lanes}
        s.wait = Wait(req, until, lambda: any(p[0] in wanted for p in s.pushed))
        return LATER

    def ack_tags(self, s: Session, tags: Sequence[int]) -> None:
        """Write basic.ack for each tag (`write_acks`); a commit makes them count. Every
        ack goes through here, so a stream waiting for a new prefetch gets it first."""
        self.resize(s)
        self.write_acks(s, tags)

    def write_acks(self, s: Session, tags: Sequence[int]) -> None:
        """basic.ack each tag, with one multiple-ack for those below every other unsettled
        tag on the channel (in a worker's batch, usually all of them), into the output
        buffer: the commit that follows (`commit_soon`, `confirm_acks`) writes them."""
        channel = s.sub._impl  # the blocking channel's ack would flush each one
        if len(tags) == 1:  # a worker's task: no multiple-ack to look for
            s.settled(tags[0])
            channel.basic_ack(tags[0])
            return
        for tag in tags:
            s.settled(tag)
        low = min(s.unsettled(), default=math.inf)
        ordered = sorted(tags)
        below = [tag for tag in ordered if tag < low]
        if len(below) > 1:
            channel.basic_ack(below[-1], multiple=True)
            ordered = ordered[len(below) :]
        for tag in ordered:
            channel.basic_ack(tag)

    def commit_soon(self, s: Session) -> None:
        """Write a commit behind what was written on `sub`, without waiting for its answer:
        the acks of a worker's tasks count as each ends (a SIGKILL reruns the running task
        only), and commits follow each other without a round trip in between."""
        s.commits_out += 1
        channel = s.sub
        channel._impl._send_method(spec.Tx.Commit())
        channel._flush_output()  # as the blocking channel's own basic_ack does

    def ack_now(self, s: Session, tag: int) -> None:
        """A worker's task ended: its ack and a commit, written to the socket in one piece
        before this returns (a SIGKILL then reruns only the running task), without
        waiting for the commit's answer. One frame buffer and one send, not two: this
        runs once per task."""
        self.resize(s)
        impl = s.sub._impl
        if not impl.is_open:  # closing: the blocking channel's ack raises as it should
            self.ack_tags(s, [tag])
            self.commit_soon(s)
            return
        s.settled(tag)
        s.commits_out += 1
        s.conn._impl._output_marshaled_frames([ack_and_commit(impl.channel_number, tag)])
        s.sub._flush_output()

    def ack_here(self, s: Session, tag: int) -> bool | None:
        """`ack_now` from another thread while the I/O thread is idle (`Link.here`): the
        ack and a commit sent on the socket directly, pika's output buffer being empty
        (so no frame of pika's is half sent). True: sent whole. False: nothing written (a
        resize is due, which needs round trips; the buffer holds data; the socket is
        full), `ack_now` on the I/O thread does it. None: the socket took part, the rest
        is in pika's buffer for the I/O thread to send."""
        st = s.stream
        impl = s.sub._impl
        transport = s.conn._impl._transport
        if (st is not None and st.resize) or not impl.is_open or transport is None:
            return False
        if type(transport._sock) is not socket.socket:  # TLS: its state is pika's to keep
            return False
        if transport.get_write_buffer_size():
            return False
        data = ack_and_commit(impl.channel_number, tag)
        try:
            sent = transport._sock.send(data, socket.MSG_DONTWAIT)
        except OSError:  # full (BlockingIOError), or the connection is failing
            return False
        if not sent:
            return False
        if sent < len(data):
            transport.write(data[sent:])  # the I/O loop sends the rest; `ack_now` waits
        s.settled(tag)
        s.commits_out += 1
        s.conn._impl.bytes_sent += sent
        return True if sent == len(data) else None

    def confirm_acks(self, s: Session) -> None:
        """Commit what was written on `sub` and wait until every commit is answered: then
        the server has processed the acks. If it had closed the channel (consumer_timeout),
        this raises and the settle reports False."""
        self.commit_soon(s)
        s.sub._flush_output(lambda: s.commits_out <= 0)

    def ack(self, s: Session, tag: int) -> None:
        self.ack_tags(s, [tag])
        self.confirm_acks(s)

    def move(
        self,
        s: Session,
        tag: int,
        target: str,
        body: bytes,
        headers: dict[str, Any],
        delay: float = 0,
    ) -> None:
        """Publish a copy to `target` and ack the original, together (`transfer`): a
        retried task never runs twice, a dead letter is never also redelivered."""
        held = s.held[tag]
        out = Out(held.queue, target, body, held.message_id, headers, delay)
        self.resize(s)  # as at every settle (`ack_tags`)
        try:
            self.transfer(s, [out], [tag])
        except pe.AMQPChannelError:
            # The copy was refused (its queue's declaration failed, closing `pub`): give
            # the original back rather than sit on it. (If `sub` died, it went back.)
            if s.sub.is_open:
                s.sub.basic_reject(tag, requeue=True)
                s.settled(tag)
                self.confirm_acks(s)
            raise

    def dead_headers(self, held: Held, count: int, reason: str = "") -> dict[str, Any]:
        return held.copy_headers(
            {
                H_REASON: reason or poison_reason(count - 1),
                H_DEAD_AT: repr(time.time()),
                H_COUNT: count,
                H_RETRIES: held.retries,
            }
        )


def on_message(take: Taker) -> Callable[[Any, Any, Any, bytes], None]:
    """pika's consumer callback (channel, method, properties, body) for `take`."""
    return lambda _channel, method, props, body: take(method, props, body)


def ack_and_commit(channel: int, tag: int) -> bytes:
    """The frames of an ack of `tag` and a commit on `channel`, to be sent in one piece."""
    ack: bytes = frame.Method(channel, spec.Basic.Ack(delivery_tag=tag)).marshal()
    commit: bytes = frame.Method(channel, spec.Tx.Commit()).marshal()
    return ack + commit
