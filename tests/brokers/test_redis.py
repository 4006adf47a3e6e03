"""What the Redis broker promises beyond the contract suite: no polling, messages handed to
waiting fetchers, bounded wake tokens, thread-safety, redacted errors, a SIGKILLed consumer,
and a redis_server restart."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from soloist.brokers import redis as redis_broker
from soloist.brokers import redis_script, redis_wait
from soloist.brokers.base import Delivery, QueueStats, poison_reason
from soloist.brokers.redis import RedisBroker
from soloist.brokers.redis_connection import pack
from soloist.brokers.redis_script import Script
from soloist.errors import BrokerUnavailable, ConfigurationError
from soloist.results.base import SUCCESS
from soloist.results.redis import RedisResultStore
from tests.support.interrupts import assert_interrupt_ends_a_wait
from tests.support.redis_support import (
    FlushingRedisBroker,
    RedisServer,
    prefixed_url,
    refusing_port,
)
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    b = FlushingRedisBroker(prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url))
    yield b
    b.close()


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def calls(broker: RedisBroker) -> dict[str, int]:
    """Commands the redis_server ran so far, by name."""
    stats = broker.redis.client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def spent(before: dict[str, int], after: dict[str, int], command: str) -> int:
    return after.get(command, 0) - before.get(command, 0)


def blocked_on_server(broker: RedisBroker) -> bool:
    """Whether the broker's idle wait is blocked in Redis now: its connection's flags in
    CLIENT LIST hold `b`."""
    client = broker._wait._client_id
    if client is None:
        return False
    listing = broker.redis.command("CLIENT", "LIST", "ID", client)
    fields = dict(f.split("=", 1) for f in str(listing, "utf-8").split() if "=" in f)
    return "b" in fields.get("flags", "")


def fetched_while(
    broker: RedisBroker, queues: list[str], during: Callable[[], None]
) -> list[bytes]:
    """The bodies a fetch of `queues` (waiting up to 5 s) gets when `during` runs while it
    is blocked in Redis."""
    got: list[bytes] = []
    fetcher = threading.Thread(
        target=lambda: got.extend(d.body for d in broker.fetch(queues, 10, 30, timeout=5.0))
    )
    fetcher.start()
    wait_until(lambda: blocked_on_server(broker), 4, "the fetch blocked in Redis")
    during()
    fetcher.join()
    return got


def flush_scripts(broker: RedisBroker) -> None:
    """SCRIPT FLUSH on the test module's own server, as a restart or failover would."""
    admin = redis.Redis.from_url(broker.url.split("?")[0])
    admin.script_flush()
    admin.close()


def publish_elsewhere(broker: RedisBroker, queue: str, body: bytes) -> None:
    """Publish from another broker on the same server (another process's producer)."""
    publisher = RedisBroker(broker.url)
    publisher.publish(queue, body)
    publisher.close()


def test_errors_never_show_the_password() -> None:
    with refusing_port() as port:
        url = f"redis://:s3cret@127.0.0.1:{port}/0"
        broker = RedisBroker(url)
        with pytest.raises(BrokerUnavailable) as caught:
            broker.depth("q")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(ConfigurationError) as bad:
        RedisBroker(url + "?socket_timeout=soon")
    assert "s3cret" not in str(bad.value)


def test_url_options() -> None:
    broker = RedisBroker(
        "rediss://:pw@example.invalid:6380/3?socket_timeout=2&prefix=app:"
        "&max_deliveries=9&reconnect_timeout=4&ssl_cert_reqs=none"
    )
    pool = broker.redis.client.connection_pool
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["socket_timeout"] == 2
    assert "SSL" in pool.connection_class.__name__
    assert (broker.prefix, broker.max_deliveries, broker.redis.reconnect_timeout) == ("app:", 9, 4)
    assert broker.redis.max_block < 2  # a blocking wait returns before the socket times out
    assert "pw" not in broker.redis.redacted


def test_a_script_carries_the_prelude_helpers_it_calls_and_theirs_only() -> None:
    prelude = redis_script._prelude_for("bury(queue, id, reason)")
    # bury calls unplace, qkey, mkey and now_text (which reads the clock variables).
    for name in ("bury", "unplace", "qkey", "mkey", "now_text"):
        assert f"local function {name}(" in prelude
    assert "local clock, clock_text" in prelude
    assert "local prefix = ARGV[1]" in prelude
    for name in ("held", "wake", "make_ready", "variadic", "now"):
        assert f"local function {name}(" not in prelude
    # A name in a comment does not count.
    assert "local function held(" not in redis_script._prelude_for("-- held(id, r)\nreturn 1")


def test_an_idle_fetch_blocks_instead_of_polling(broker: RedisBroker, queue: str) -> None:
    broker.fetch([queue], 1, 30, timeout=0)  # loads the claim script
    before = calls(broker)
    assert broker.fetch([queue], 10, 30, timeout=1.0) == []
    after = calls(broker)
    assert spent(before, after, "evalsha") <= 3 and spent(before, after, "blpop") <= 2


def test_a_delayed_message_falls_due_on_time_without_polling(
    broker: RedisBroker, queue: str
) -> None:
    broker.publish(queue, b"later", delay=0.5)
    broker.fetch([queue], 1, 30, timeout=0)  # loads the claim script
    before = calls(broker)
    t0 = time.monotonic()
    (got,) = broker.fetch([queue], 1, 30, timeout=3.0)
    waited = time.monotonic() - t0
    after = calls(broker)
    assert got.body == b"later" and waited >= 0.4
    # The fetch slept until the message was due: a claim, a wait, a claim (give or take one).
    assert spent(before, after, "evalsha") <= 4 and spent(before, after, "blpop") <= 3


def test_a_publish_hands_its_message_to_a_waiting_fetcher(
    broker: RedisBroker, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a claim that found nothing, an idle fetch writes the claim (which leaves its
    ticket on the queue) and a BLPOP on its inbox together. A publish then hands the message
    over, leased: the BLPOP's reply is the message, and no claim runs for it."""
    consumer = RedisBroker(broker.url)
    consumer.fetch([queue], 1, 30, timeout=0)  # finds nothing
    writes: list[list[object]] = []

    def packed(commands: list[tuple[object, ...]]) -> list[bytes]:
        writes.append([c[0] for c in commands])  # each pack is one write
        return pack(commands)

    monkeypatch.setattr(redis_wait, "pack", packed)
    got: list[Delivery] = []
    fetcher = threading.Thread(target=lambda: got.extend(consumer.fetch([queue], 10, 30, 5.0)))
    fetcher.start()
    wait_until(lambda: blocked_on_server(consumer), 4, "the fetch blocked in Redis")
    before = calls(broker)
    mid = broker.publish(queue, b"handed")
    fetcher.join()
    after = calls(broker)
    assert writes == [["SCRIPT", "EVALSHA", "BLPOP"]]  # (a new link: it loads the claim)
    assert spent(before, after, "zpopmin") == 0  # no claim ran after the publish
    (handed,) = got
    assert (handed.id, handed.body, handed.delivery_count, handed.retries) == (mid, b"handed", 1, 0)
    assert broker.stats(queue) == QueueStats(0, 0, 1, 0, 0)  # leased to the consumer
    assert broker.extend([handed], 30) == []  # held under its receipt
    assert consumer.ack(handed)
    consumer.close()
    assert broker.stats(queue) == QueueStats(0, 0, 0, 0, 0)
    assert broker.redis.client.keys(f"{broker.prefix}f:*") == []


def test_an_idle_fetcher_keeps_one_ticket_on_its_queue(broker: RedisBroker, queue: str) -> None:
    """Each wait that times out claims and puts its ticket back: one place among the
    queue's waiters, whatever the number of waits, and none once the fetcher closes."""
    waiters = f"{broker.prefix}q:{queue}:waiters"
    for _ in range(3):
        assert broker.fetch([queue], 10, 30, timeout=0.2) == []
    assert broker.redis.client.lrange(waiters, 0, -1) == [broker._wait.ticket.encode()]
    publish_elsewhere(broker, queue, b"now")
    (now,) = broker.fetch([queue], 10, 30, timeout=3.0)  # handed over at the next wait
    assert now.body == b"now"
    broker.publish(queue, b"later", delay=0.3)
    (later,) = broker.fetch([queue], 10, 30, timeout=3.0)  # the wait ends when it is due
    assert later.body == b"later" and later.delivery_count == 1
    assert broker.ack_many([now, later]) == [True, True]
    broker.leave()  # as at close
    assert broker.redis.client.keys(f"{broker.prefix}f:*") == []
    assert broker.redis.client.exists(waiters) == 0


def test_a_message_left_in_the_inbox_comes_out_beside_what_the_next_claim_gets(
    broker: RedisBroker, queue: str
) -> None:
    """A message handed over after the fetcher stopped reading (its wait's reply lost with
    a dropped link) waits in the inbox: the next wait pops it first, still leased under
    its own receipt, beside what that wait's claim got."""
    assert broker.fetch([queue], 10, 30, timeout=0) == []  # claimed nothing, no wait
    ticket = broker._wait.ticket
    broker.redis.command("SET", ticket, "0123456789abcdef 9999999999.000", "PX", 10000)
    broker.redis.command("LPUSH", f"{broker.prefix}q:{queue}:waiters", ticket)
    publish_elsewhere(broker, queue, b"left")  # handed over to nobody reading
    publish_elsewhere(broker, queue, b"ready")
    got = broker.fetch([queue], 10, 30, timeout=1.0)
    assert sorted((d.body, d.receipt == "0123456789abcdef") for d in got) == [
        (b"left", True),
        (b"ready", False),
    ]
    assert broker.ack_many(got) == [True, True]
    assert broker.stats(queue) == QueueStats(0, 0, 0, 0, 0)


def test_a_fetch_after_a_wait_lost_to_an_outage_gives_back_what_was_handed_over(
    broker: RedisBroker, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait that raised (an outage longer than the reconnect timeout) never read its
    inbox: the next fetch, which may be a plain claim, first takes the ticket off the queue
    and gives back a message handed over meanwhile, uncounted."""

    def lost(wait: redis_wait.Wait, claim: Script, block: int, args: tuple[object, ...]) -> None:
        broker.redis.execute(claim.command(wait.ticket, 10_000, *args))  # the claim ran
        publish_elsewhere(broker, queue, b"handed")  # to the ticket it set
        raise BrokerUnavailable("Redis is away")  # and the BLPOP's reply never came

    monkeypatch.setattr(redis_wait.Wait, "_exchange", lost)
    with pytest.raises(BrokerUnavailable):
        broker.fetch([queue], 10, 30, timeout=0.5)
    monkeypatch.undo()
    assert broker.stats(queue) == QueueStats(0, 0, 1, 0, 0)  # leased to the lost wait
    (got,) = broker.fetch([queue], 10, 30, timeout=0)
    assert (got.body, got.delivery_count) == (b"handed", 1)
    assert broker.redis.client.keys(f"{broker.prefix}f:*") == []


def test_a_wait_after_one_that_timed_out_keeps_the_ticket_and_claims_nothing(
    broker: RedisBroker, queue: str
) -> None:
    """Nothing came during a wait that timed out (it would have taken the ticket): the next
    wait keeps the ticket, which stands a while after its wait, and runs no claim."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    before = calls(broker)
    for _ in range(3):
        assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    after = calls(broker)
    assert spent(before, after, "blpop") >= 3 and spent(before, after, "pexpire") >= 3
    assert spent(before, after, "zpopmin") == 0
    publish_elsewhere(broker, queue, b"now")
    (got,) = broker.fetch([queue], 10, 30, timeout=3.0)
    assert (got.body, got.delivery_count) == (b"now", 1)


def test_short_waits_that_keep_the_ticket_fetch_a_delayed_message_when_it_falls_due(
    broker: RedisBroker, queue: str
) -> None:
    """A delayed publish wakes a wait; the claim after it learns the due time, and its
    own wait times out before then. The waits that follow keep the ticket and claim
    nothing, but only until that due time, not until the next IDLE_RECHECK (10 s)."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    fetcher = threading.Thread(target=broker.fetch, args=([queue], 10, 30, 1.0))
    fetcher.start()
    wait_until(lambda: blocked_on_server(broker), 4, "the fetch blocked in Redis")
    publisher = RedisBroker(broker.url)
    published = time.monotonic()
    publisher.publish(queue, b"later", delay=2.0)
    publisher.close()
    fetcher.join()
    got: list[Delivery] = []
    while not got and time.monotonic() - published < redis_broker.IDLE_RECHECK + 2:
        got = broker.fetch([queue], 10, 30, timeout=0.1)  # a busy pool's short waits
    assert [d.body for d in got] == [b"later"]
    # Due at 2 s; kept waiting for the recheck, it would have come at about 10 s.
    assert time.monotonic() - published < 6.0


def test_a_message_handed_over_between_two_waits_comes_out_at_the_next(
    broker: RedisBroker, queue: str
) -> None:
    """The ticket stands a while after a wait timed out: a publish then hands its message
    to the inbox, and the next wait returns it at once."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    publish_elsewhere(broker, queue, b"between")
    assert broker.stats(queue) == QueueStats(0, 0, 1, 0, 0)  # handed over, leased
    (got,) = broker.fetch([queue], 10, 30, timeout=3.0)
    assert (got.body, got.delivery_count) == (b"between", 1)
    assert broker.ack(got)


def test_a_wait_on_a_new_link_to_a_server_without_its_scripts_gets_what_waits_in_the_inbox(
    broker: RedisBroker, queue: str
) -> None:
    """A new link (after a restart or a failover) may reach a server without the wait's
    scripts. It loads each in the same write as its first use: a BLPOP behind NOSCRIPT
    would take the message handed over between two waits on a link then dropped, and
    leave it leased to nobody until the lease lapsed."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    flush_scripts(broker)
    broker._wait.close()  # as a restart would drop it
    publish_elsewhere(broker, queue, b"between")
    (got,) = broker.fetch([queue], 10, 30, timeout=3.0)
    assert (got.body, got.delivery_count) == (b"between", 1)


def test_a_fetch_that_will_not_wait_first_leaves_its_standing_ticket(
    broker: RedisBroker, queue: str
) -> None:
    """A fetch without a wait (a plain claim) after one that timed out first takes the
    standing ticket off the queue and gives back what was handed over meanwhile: nothing
    sits unseen in the inbox while the worker is busy."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    publish_elsewhere(broker, queue, b"between")
    (got,) = broker.fetch([queue], 10, 30, timeout=0)
    assert (got.body, got.delivery_count) == (b"between", 1)
    assert broker.redis.client.keys(f"{broker.prefix}f:*") == []
    publish_elsewhere(broker, queue, b"later")
    assert broker.stats(queue) == QueueStats(1, 0, 1, 0, 0)  # not handed to anyone


def test_a_fetch_of_other_queues_leaves_the_ones_it_waited_on(
    broker: RedisBroker, queue: str
) -> None:
    other = queue + "-b"
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []
    assert broker.fetch([other], 10, 30, timeout=0.1) == []
    publish_elsewhere(broker, queue, b"first")
    assert broker.stats(queue) == QueueStats(1, 0, 0, 0, 0)  # left in ready, not handed over


def test_a_fetcher_whose_wait_was_cut_short_is_handed_nothing(
    broker: RedisBroker, queue: str
) -> None:
    """An `interrupt` (a warm shutdown) ends the wait, and the fetcher leaves its queues:
    what is published next waits in the queue for the next fetch, not in its inbox."""
    fetcher = threading.Thread(target=broker.fetch, args=([queue], 10, 30, 5.0))
    fetcher.start()
    wait_until(lambda: blocked_on_server(broker), 4, "the fetch blocked in Redis")
    broker.interrupt()
    fetcher.join()
    broker.publish(queue, b"next")
    assert broker.stats(queue) == QueueStats(1, 0, 0, 0, 0)
    assert broker.redis.client.keys(f"{broker.prefix}f:*") == []


def test_a_fetch_of_several_queues_is_handed_a_message_of_either(
    broker: RedisBroker, queue: str
) -> None:
    """A fetch of several queues waits on all of them with one ticket."""
    other = queue + "-b"
    assert broker.fetch([queue, other], 10, 30, timeout=0.2) == []
    got = fetched_while(broker, [queue, other], lambda: publish_elsewhere(broker, other, b"b"))
    assert got == [b"b"]


def test_interrupt_ends_a_wait_at_once(broker: RedisBroker, queue: str) -> None:
    """A warm shutdown's `interrupt` cuts short the wait under way (CLIENT UNBLOCK), or the
    next one if none is: an idle fetch may block for seconds and still stop at once."""
    assert broker.fetch([queue], 10, 30, timeout=0.2) == []
    assert_interrupt_ends_a_wait(broker, queue, lambda _thread: blocked_on_server(broker))


def test_an_interrupt_that_an_acl_refuses_lets_the_wait_run_to_its_end(
    redis_server: RedisServer, queue: str
) -> None:
    """A user whose ACL refuses CLIENT UNBLOCK: `interrupt` (a warm shutdown's, from
    another thread) raises nothing, and the wait ends when it times out."""
    admin = redis.Redis.from_url(redis_server.url)
    user = f"no-unblock-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        categories=["+@all"], commands=["-client|unblock"],
    )  # fmt: skip
    url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
    broker = FlushingRedisBroker(prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", url))
    try:
        ended: list[list[Delivery]] = []
        fetcher = threading.Thread(target=lambda: ended.append(broker.fetch([queue], 10, 30, 1.0)))
        fetcher.start()
        wait_until(lambda: blocked_on_server(broker), 4, "the fetch blocked in Redis")
        broker.interrupt()
        fetcher.join(10)
        assert ended == [[]]
    finally:
        broker.close()
        admin.acl_deluser(user)
        admin.close()


def test_a_warm_shutdown_ends_an_idle_workers_wait(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """An idle worker blocks for seconds at a time (few calls to Redis); SIGTERM ends the
    wait under way at once (CLIENT UNBLOCK) instead of at its end."""
    url = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url)
    env = {**os.environ, "SOLOIST_BROKER_URL": url, "SOLOIST_RESULT_URL": url}
    env["SOLOIST_TEST_LEDGER"] = str(tmp_path / "ledger.txt")
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "tests.support.sample_app:app"]
    admin = redis.Redis.from_url(redis_server.url)

    def blocked() -> list[dict[str, object]]:
        return [c for c in admin.client_list() if c.get("cmd") == "blpop"]

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: blocked(), 20, "the worker blocked in BLPOP")
        proc.send_signal(signal.SIGTERM)
        # Without the interrupt, the BLPOP would run to its end, seconds later.
        wait_until(lambda: not blocked(), 1.5, "the wait ended")
        assert proc.wait(20) == 0
        prefix = url.split("prefix=")[1]
        assert admin.keys(f"{prefix}f:*") == []  # it left its queues
    finally:
        if proc.poll() is None:
            proc.kill()
        admin.close()


def test_a_lost_ticket_delays_a_waiting_fetcher_at_most_idle_recheck(
    broker: RedisBroker, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetcher's place among the waiters can be lost (a failover to a replica that had
    not got it): its waits keep the ticket without claiming, but it claims anyway every
    IDLE_RECHECK seconds."""
    monkeypatch.setattr(redis_broker, "IDLE_RECHECK", 0.5)
    assert broker.fetch([queue], 10, 30, timeout=0.2) == []
    waiters = f"{broker.prefix}q:{queue}:waiters"
    got: list[bytes] = []
    fetcher = threading.Thread(
        target=lambda: got.extend(d.body for d in broker.fetch([queue], 10, 30, timeout=5.0))
    )
    fetcher.start()
    wait_until(lambda: blocked_on_server(broker), 4, "the fetch blocked in Redis")
    broker.redis.command("DEL", waiters)  # its place is lost
    publish_elsewhere(broker, queue, b"orphan")
    assert broker.stats(queue) == QueueStats(1, 0, 0, 0, 0)  # nobody waits, Redis thinks
    fetcher.join()
    assert got == [b"orphan"]


def test_a_wait_longer_than_the_socket_timeout_keeps_its_link(
    broker: RedisBroker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A fetch waiting longer than the URL's socket timeout: its link has room for the
    longest wait (redis_wait.MAX_BLOCK), and no link is called dead."""
    short = RedisBroker(broker.url + "&socket_timeout=0.3")
    caplog.set_level(logging.WARNING, logger="soloist.redis")
    assert short.fetch([queue], 10, 30, timeout=1.0) == []
    short.close()
    # Only Soloist's own: a thread another test left behind may log through the root logger.
    assert not [r for r in caplog.records if r.name.startswith("soloist")]


def test_a_script_lost_before_a_fetch_waits_is_loaded_again(
    broker: RedisBroker, queue: str
) -> None:
    """SCRIPT FLUSH after the wait's link loaded the claim: the claim in front of its
    BLPOP gets NOSCRIPT, so the fetch drops that link (ending the BLPOP), loads the script
    on a new one, and waits with its ticket left on the queue: the message published next
    is handed over."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []  # the link loads the claim
    assert broker.fetch([queue], 10, 30, timeout=0) == []  # the next fetch's claim is its wait's
    flush_scripts(broker)
    assert fetched_while(broker, [queue], lambda: publish_elsewhere(broker, queue, b"x")) == [b"x"]


def test_an_interrupt_that_unblocks_a_wait_dropped_for_noscript_ends_the_fetch(
    broker: RedisBroker, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait whose claim got NOSCRIPT has its BLPOP blocked on the link it then drops. An
    `interrupt` whose CLIENT UNBLOCK ends that BLPOP is done (it got 1): the wait must not
    be sent again on a new link, which nothing would unblock."""
    assert broker.fetch([queue], 10, 30, timeout=0.1) == []  # the link loads the claim
    assert broker.fetch([queue], 10, 30, timeout=0) == []  # the next fetch's claim is its wait's
    flush_scripts(broker)
    drop = broker._wait.close

    def interrupted_first() -> None:
        wait_until(lambda: blocked_on_server(broker), 4, "the BLPOP blocked behind NOSCRIPT")
        broker.interrupt()  # as a warm shutdown would, from another thread, just now
        drop()

    monkeypatch.setattr(broker._wait, "close", interrupted_first)
    before = calls(broker)
    t0 = time.monotonic()
    assert broker.fetch([queue], 10, 30, timeout=5.0) == []
    assert time.monotonic() - t0 < 2.5
    assert spent(before, calls(broker), "blpop") == 1  # the dropped link's only


def test_an_interrupted_exchange_leaves_no_stale_reply(broker: RedisBroker, queue: str) -> None:
    """An exception between sending a command and reading its reply (a signal handler's,
    say) closes that connection, so the next command cannot take the old reply as its own."""
    broker.publish(queue, b"x")
    (conn,) = broker.redis._idle

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    conn.read_response = interrupted
    with pytest.raises(KeyboardInterrupt):
        broker.stats(queue)
    del conn.read_response
    assert broker.depth(queue) == 1
    assert broker.stats(queue) == QueueStats(1, 0, 0, 0, 0)


def test_a_forked_child_talks_on_a_connection_of_its_own(broker: RedisBroker) -> None:
    parent = broker.redis.execute(("CLIENT", "ID"))[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, b"%d" % broker.redis.execute(("CLIENT", "ID"))[0])
        finally:
            os._exit(0)
    os.close(write)
    child = int(os.read(read, 64))
    os.close(read)
    os.waitpid(pid, 0)
    assert child != parent
    assert broker.redis.execute(("CLIENT", "ID"))[0] == parent


def test_one_batch_publish_wakes_every_idle_consumer(
    redis_server: RedisServer, broker: RedisBroker, queue: str
) -> None:
    consumers = [RedisBroker(broker.url) for _ in range(4)]
    got: list[bytes] = []

    def consume(c: RedisBroker) -> None:
        got.extend(d.body for d in c.fetch([queue], 1, 30, timeout=5.0))

    threads = [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all four are blocked now
    t0 = time.monotonic()
    broker.publish_many([(queue, b"%d" % i, 0, 0) for i in range(4)])
    for t in threads:
        t.join()
    assert sorted(got) == [b"0", b"1", b"2", b"3"]
    assert time.monotonic() - t0 < 2.0  # passed on from one to the next, not left to time out
    for c in consumers:
        c.close()


def test_publishes_with_nobody_waiting_leave_no_wake_up_behind(
    broker: RedisBroker, queue: str
) -> None:
    """On one server only a waiting fetcher is woken: no token piles up for nobody."""
    broker.publish_many([(queue, b"x", 0, 0)] * 50)
    for _ in range(50):
        broker.publish(queue, b"y", delay=60)
    keys = sorted(broker.redis.client.keys(f"{broker.prefix}q:{queue}:*"))
    assert keys == [f"{broker.prefix}q:{queue}:{kind}".encode() for kind in ("delayed", "ready")]


def test_a_lapsed_lease_moved_back_to_ready_can_still_be_acked_by_its_holder(
    broker: RedisBroker, queue: str
) -> None:
    """A claim moves lapsed leases to ready before it pops; one that it does not take stays
    there, still held, and its holder's ack takes it out of ready (the slow path of the
    ack's batched ZREM)."""
    broker.publish(queue, b"slow")
    (slow,) = broker.fetch([queue], 1, 0.1, 1.0)
    time.sleep(0.2)
    broker.publish(queue, b"urgent", priority=9)
    (urgent,) = broker.fetch([queue], 1, 30, 1.0)  # promotes "slow", takes "urgent" first
    assert urgent.body == b"urgent"
    assert broker.redis.client.zcard(f"{broker.prefix}q:{queue}:ready") == 1
    assert broker.ack_many([slow, urgent]) == [True, True]
    assert broker.stats(queue) == QueueStats(0, 0, 0, 0, 0)
    assert broker.fetch([queue], 10, 30, 0) == []


def test_a_batch_past_luas_unpack_limit_is_claimed_and_acked_whole(
    broker: RedisBroker, queue: str
) -> None:
    """The batch's ZADD, ZREM and DEL go in slices: Lua cannot unpack 9000 values at once."""
    broker.publish_many([(queue, b"%d" % i, 0, 0) for i in range(4500)])
    got = broker.fetch([queue], 4500, 30, 1.0)
    assert len(got) == 4500 and broker.stats(queue) == QueueStats(0, 0, 4500, 0, 0)
    assert broker.ack_many(got) == [True] * 4500
    assert broker.stats(queue) == QueueStats(0, 0, 0, 0, 0)
    assert broker.redis.client.keys(f"{broker.prefix}m:*") == []


def test_the_poison_reason_is_the_contract_text(redis_server: RedisServer, queue: str) -> None:
    broker = FlushingRedisBroker(
        prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url), max_deliveries=1
    )
    broker.publish(queue, b"poison")
    assert len(broker.fetch([queue], 1, 0.1, 1.0)) == 1
    time.sleep(0.2)
    assert broker.fetch([queue], 1, 0.1, 0.2) == []
    (dead,) = broker.dead_letters(queue)
    assert (dead.reason, dead.delivery_count) == (poison_reason(1), 2)
    broker.close()


def test_the_keeper_thread_is_not_held_up_by_a_blocked_fetch(
    broker: RedisBroker, queue: str
) -> None:
    broker.publish(queue, b"held")
    (held,) = broker.fetch([queue], 1, 30, 1.0)
    fetcher = threading.Thread(target=broker.fetch, args=([queue], 1, 30, 2.0))
    fetcher.start()
    time.sleep(0.2)  # the fetch is blocked in BLPOP on one pooled connection
    t0 = time.monotonic()
    assert broker.extend([held], 30) == []
    broker.heartbeat("w", b"{}", 10)
    assert time.monotonic() - t0 < 1.0
    fetcher.join()
    assert broker.ack(held)


_CONSUME_AND_HANG = """
import sys, time
from soloist.brokers.redis import RedisBroker
from soloist.brokers.redis_connection import pack
from soloist.brokers.redis_script import Script
(d,) = RedisBroker(sys.argv[1]).fetch([sys.argv[2]], 1, 1.0, 5.0)
print(d.id, flush=True)
time.sleep(60)
"""


def child_process(source: str, broker: RedisBroker, queue: str) -> subprocess.Popen[str]:
    """`python -c source url queue`, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", source, broker.url, queue],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_a_sigkilled_consumer_loses_nothing(broker: RedisBroker, queue: str) -> None:
    mid = broker.publish(queue, b"survivor")
    child = child_process(_CONSUME_AND_HANG, broker, queue)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == mid
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert broker.fetch([queue], 1, 30, 0.1) == []  # its lease still runs
    (again,) = broker.fetch([queue], 1, 30, timeout=3.0)
    assert (again.id, again.body, again.delivery_count) == (mid, b"survivor", 2)


_WAIT_AND_HANG = """
import sys
from soloist.brokers.redis import RedisBroker
RedisBroker(sys.argv[1]).fetch([sys.argv[2]], 1, 1.0, 60.0)
"""


def test_a_message_handed_to_a_fetcher_killed_while_waiting_comes_back(
    broker: RedisBroker, queue: str
) -> None:
    """A fetcher SIGKILLed while it waits leaves its ticket until its wait would have ended:
    one message published meanwhile is handed to it, leased, and comes back to another
    fetch when that lease lapses, counted as delivered once."""
    child = child_process(_WAIT_AND_HANG, broker, queue)
    waiters = f"{broker.prefix}q:{queue}:waiters"
    wait_until(lambda: broker.redis.client.llen(waiters) == 1, 10, "the child waits")
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    mid = broker.publish(queue, b"orphan")
    assert broker.stats(queue) == QueueStats(0, 0, 1, 0, 0)  # handed to the dead fetcher
    (again,) = broker.fetch([queue], 1, 30, timeout=5.0)
    assert (again.id, again.body, again.delivery_count) == (mid, b"orphan", 2)


def test_a_server_restart_loses_no_acknowledged_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Publish and consume thousands of messages while the redis_server is killed and restarted;
    every publish that returned must be consumed (duplicates are allowed, losses are not)."""
    srv = RedisServer(tmp_path)
    srv.start()
    url = prefixed_url("restart:", srv.url, reconnect_timeout=15)
    total, queue = 3000, "restart"
    producer = RedisBroker(url)
    consumers = [RedisBroker(url) for _ in range(2)]
    published: list[bytes] = []
    consumed: set[bytes] = set()
    producing = threading.Event()
    producing.set()
    deadline = time.monotonic() + 25

    def produce() -> None:
        for i in range(total):
            body = b"%d" % i
            producer.publish(queue, body)
            published.append(body)
        producing.clear()

    def consume(c: RedisBroker) -> None:
        while time.monotonic() < deadline and (
            producing.is_set() or not consumed.issuperset(published)
        ):
            for d in c.fetch([queue], 10, 2.0, 0.5):
                c.ack(d)
                consumed.add(d.body)

    caplog.set_level(logging.WARNING, logger="soloist.redis")
    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    try:
        for cut, sig in ((total // 3, signal.SIGKILL), (2 * total // 3, signal.SIGTERM)):
            while len(published) < cut and producing.is_set():
                time.sleep(0.01)
            srv.stop(sig)
            time.sleep(0.3)
            srv.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "the run did not finish in time"
    finally:
        producing.clear()
        srv.stop()
        for b in (producer, *consumers):
            b.close()
    assert len(published) == total
    assert set(published) <= consumed
    lost_logs = [r for r in caplog.records if r.getMessage().startswith("lost Redis")]
    assert 0 < len(lost_logs) <= 2 * 3  # once per outage per connection, not per retry


def test_a_worker_process_runs_tasks_and_the_results_arrive(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """End to end on Redis: producer → broker → `soloist worker` → result store → get()."""
    from tests.support import sample_app

    url = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url)
    sample_app.app.configure(url, url)
    env = {**os.environ, "SOLOIST_BROKER_URL": url, "SOLOIST_RESULT_URL": url}
    env["SOLOIST_TEST_LEDGER"] = str(tmp_path / "ledger.txt")
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "soloist", "worker", "-A", "tests.support.sample_app:app"]
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        results = [sample_app.add.delay(i, i) for i in range(20)]
        assert [r.get(timeout=15) for r in results] == [2 * i for i in range(20)]
    finally:
        worker.kill()
        worker.wait()
        sample_app.app.close()


def test_an_ack_whose_reply_was_lost_counts_as_acked(redis_server: RedisServer, queue: str) -> None:
    """Redis ran the ack, the reply never came, the connection dropped: the call is sent
    again and finds the message gone. That is this ack's own effect, not a lost lease."""
    from tests.support.netfaults import FaultyProxy

    proxy = FaultyProxy(("127.0.0.1", redis_server.port))
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    broker = FlushingRedisBroker(prefixed_url(prefix, f"redis://127.0.0.1:{proxy.port}/0"))
    direct = redis.Redis.from_url(redis_server.url)
    try:
        broker.publish_many([(queue, b"x", 0, 0), (queue, b"y", 0, 0)])
        first, delivery = broker.fetch([queue], 2, 30, 1.0)
        assert broker.ack_many([first]) == [True]  # the script is loaded (NOSCRIPT is a reply)
        proxy.mute_replies(True)
        acked: list[list[bool]] = []
        acking = threading.Thread(target=lambda: acked.append(broker.ack_many([delivery])))
        acking.start()
        deadline = time.monotonic() + 10
        while direct.exists(f"{prefix}m:{delivery.id}"):  # the ack ran on the server
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proxy.mute_replies(False)
        proxy.reset_all()
        acking.join(timeout=30)
        assert acked == [[True]]
        # A first try that finds the message gone is still refused (fencing holds).
        assert broker.ack_many([delivery]) == [False]
    finally:
        direct.close()
        broker.close()
        proxy.close()


@pytest.mark.parametrize("settle", ["retry", "dead_letter"])
def test_a_settle_whose_reply_was_lost_counts_as_done(
    redis_server: RedisServer, queue: str, settle: str
) -> None:
    """As for an ack: a retry or dead-letter that ran, its reply lost, is not a lost lease."""
    from tests.support.netfaults import FaultyProxy

    proxy = FaultyProxy(("127.0.0.1", redis_server.port))
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    broker = FlushingRedisBroker(prefixed_url(prefix, f"redis://127.0.0.1:{proxy.port}/0"))
    direct = redis.Redis.from_url(redis_server.url)
    try:
        broker.publish_many([(queue, b"x", 0, 0), (queue, b"y", 0, 0)])
        first, delivery = broker.fetch([queue], 2, 30, 1.0)

        def run(d: Delivery) -> bool:
            return broker.retry(d, 60) if settle == "retry" else broker.dead_letter(d, "why")

        assert run(first)  # the script is loaded (NOSCRIPT is a reply)
        proxy.mute_replies(True)
        done: list[bool] = []
        settling = threading.Thread(target=lambda: done.append(run(delivery)))
        settling.start()
        deadline = time.monotonic() + 10
        while direct.hget(f"{prefix}m:{delivery.id}", "r") != b"":  # it ran on the server
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proxy.mute_replies(False)
        proxy.reset_all()
        settling.join(timeout=30)
        assert done == [True]
        assert not run(delivery), "a first try that finds it settled is still refused"
    finally:
        direct.close()
        broker.close()
        proxy.close()


def test_keys_of_another_schema_version_are_refused_with_a_clear_error(
    redis_server: RedisServer, queue: str
) -> None:
    url = prefixed_url(f"t-{uuid.uuid4().hex[:8]}:", redis_server.url)
    first, store = FlushingRedisBroker(url), RedisResultStore(url)
    try:
        first.publish(queue, b"kept")
        store.put("t1", SUCCESS, b"r", 60)
        schema = f"{first.prefix}schema"
        assert first.redis.command("HMGET", schema, "broker", "results") == [b"3", b"1"]
        again = RedisBroker(url)
        again.depth(queue)  # the same version again is fine
        again.close()
        first.redis.command("HSET", schema, "broker", 99, "results", 98)
        later, later_store = RedisBroker(url), RedisResultStore(url)
        try:
            refused = "broker keys of schema version 99 under"
            with pytest.raises(ConfigurationError, match=refused):
                later.publish(queue, b"refused")
            with pytest.raises(ConfigurationError, match="this Soloist reads version 3"):
                later.fetch([queue], 1, 30, 0)  # refused every time, not only the first
            with pytest.raises(ConfigurationError, match="results keys of schema version 98"):
                later_store.get("t1")
        finally:
            later.close()
            later_store.close()
        assert first.depth(queue) == 1  # nothing was written or taken
    finally:
        store.close()
        first.close()
