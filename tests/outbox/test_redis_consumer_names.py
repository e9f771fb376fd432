"""Each Redis subscription is its own consumer of the group: it re-reads only what it was given.

Processes of one service share a consumer group. Were they one consumer (one
name), a process that starts, or that nacks, would read its siblings' entries
in flight again and handle them a second time while the siblings still do.

A process starting adopts what dead members left: a member is dead when no
connection carries its name and it has not read for ``ADOPT_AFTER`` seconds
(0.5 s in these tests, 5 s in production).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

import pytest

from outbox.testing.services import require_module, service_url


#: ``ADOPT_AFTER`` in these tests: above the 0.1 s a polling member below leaves between reads.
ADOPT_AFTER = 0.5


@pytest.fixture(autouse=True)
def quick_adoption(monkeypatch):
    from outbox.routers import redis as redis_router

    monkeypatch.setattr(redis_router, "ADOPT_AFTER", ADOPT_AFTER)


@pytest.fixture
def redis_url():
    require_module("redis", "redis")
    return service_url("redis")


@pytest.fixture
def client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def stream(client, prefix):
    """The stream of this test's own, deleted (with its group) afterwards."""
    yield prefix + "order"
    client.delete(prefix + "order")


@pytest.fixture
def other_stream(client, prefix):
    """A second stream of this test's own (the ``invoice`` aggregate's), deleted afterwards."""
    yield prefix + "invoice"
    client.delete(prefix + "invoice")


@pytest.fixture
def publish(redis_url, prefix):
    """Publish ``count`` events of ``aggregate`` (``order``: to ``stream``); return them."""
    from outbox.routers import Destinations, open_router
    from outbox.testing.conformance import make_event

    router = open_router(redis_url, destinations=Destinations(prefix=prefix))

    def publish(count: int, aggregate: str = "order"):
        events = [make_event(key="k", aggregate=aggregate, data={"n": n}) for n in range(count)]
        assert all(result.ok for result in router.publish(events))
        return events

    yield publish
    router.close()


@pytest.fixture
def subscribe(redis_url, stream):
    """Open subscriptions of group ``g`` on ``stream`` (or ``streams``); those still open are closed afterwards."""
    from outbox.routers import open_subscription

    opened = []

    def subscribe(query: str = "", *, streams: list[str] | None = None, **options):
        subscription = open_subscription(redis_url + query, group="g", destinations=streams or [stream], **options)
        opened.append(subscription)
        return subscription

    yield subscribe
    for subscription in opened:
        subscription.close()


def consumers(client, stream) -> dict[str, int]:
    """The group's consumers on ``stream`` and how many entries each holds pending."""
    return {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(stream, "g")}


def ids(deliveries) -> list[str]:
    return [d.envelope.id for d in deliveries]


@contextlib.contextmanager
def polling(poll, *, after: float = 0.0):
    """Call ``poll`` in a thread every 0.05 s, starting ``after`` seconds from now, until the block ends.

    A member alive and reading, while the main thread starts a process.
    """
    stop = threading.Event()
    errors: list[Exception] = []

    def run():
        stop.wait(after)
        while not stop.is_set():
            try:
                poll()
            except Exception as exc:  # reported by the test, after the block
                errors.append(exc)
                return
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
    assert not errors, errors


def test_the_default_name_tells_host_and_process_apart_and_differs_per_subscription(subscribe, client, stream):
    first, second = subscribe(), subscribe()
    first.receive(timeout=0.05)
    second.receive(timeout=0.05)

    assert first.consumer != second.consumer
    assert set(consumers(client, stream)) == {first.consumer, second.consumer}
    host = socket.gethostname().split(".")[0]
    assert all(s.consumer.startswith(f"{host}-{os.getpid()}-") for s in (first, second))


def test_the_default_name_keeps_only_the_first_label_of_a_long_hostname(monkeypatch):
    from outbox.routers import redis as redis_router

    monkeypatch.setattr(socket, "gethostname", lambda: "billing-7d9f8c6b5-x2k4q.pods.cluster.example")
    assert redis_router.default_consumer_name().startswith(f"billing-7d9f8c6b5-x2k4q-{os.getpid()}-")
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 200)
    assert len(redis_router.default_consumer_name()) < 80


def test_a_subscription_opened_beside_a_busy_one_gets_only_new_entries(subscribe, publish):
    busy = subscribe()
    in_flight = publish(3)
    assert ids(busy.receive(timeout=1)) == [e.id for e in in_flight]  # handling, not acked yet

    starting = subscribe()
    assert starting.receive(timeout=0.2) == []  # the sibling's entries are not read again
    later = publish(2)
    assert ids(starting.receive(timeout=1)) == [e.id for e in later]


def test_a_nack_brings_back_only_the_subscriptions_own_entries(subscribe, publish):
    events = publish(2)
    mine, sibling = subscribe(), subscribe()
    [taken] = mine.receive(max_events=1, timeout=1)
    [held] = sibling.receive(max_events=1, timeout=1)
    assert (taken.envelope.id, held.envelope.id) == (events[0].id, events[1].id)

    taken.nack()
    [again] = mine.receive(timeout=1)
    assert again.envelope.id == taken.envelope.id and again.redelivered
    assert mine.receive(timeout=0.2) == []  # never the sibling's entry


@pytest.mark.parametrize("acked", [True, False], ids=["everything acked", "nothing ever received"])
def test_a_subscription_closed_with_nothing_pending_leaves_the_group(subscribe, publish, client, stream, acked):
    subscription = subscribe()
    if acked:
        publish(2)
        for delivery in subscription.receive(timeout=1):
            delivery.ack()
    else:
        assert subscription.receive(timeout=0.05) == []
    assert subscription.consumer in consumers(client, stream)

    subscription.close()
    assert consumers(client, stream) == {}


def test_a_subscription_closed_with_entries_pending_stays_in_the_group_and_its_entries_can_be_claimed(
        subscribe, publish, client, stream):
    busy, idle = subscribe(), subscribe()
    events = publish(2)
    assert ids(busy.receive(timeout=1)) == [e.id for e in events]
    assert idle.receive(timeout=0.2) == []

    idle.close()
    busy.close()  # with two entries unacked: they must stay pending, under its name
    assert consumers(client, stream) == {busy.consumer: 2}

    claimer = subscribe("?claim_idle=0.3")
    time.sleep(0.4)
    claimed = claimer.receive(timeout=1)
    assert ids(claimed) == [e.id for e in events] and all(d.redelivered for d in claimed)


def test_entries_left_pending_by_a_close_go_to_the_next_process_starting_without_waiting_claim_idle(
        subscribe, publish, client, stream):
    def pending():
        """(consumer, times delivered) of each pending entry."""
        return [(p["consumer"].decode(), p["times_delivered"]) for p in client.xpending_range(stream, "g", "-", "+", 10)]

    stopping = subscribe()
    events = publish(3)
    taken = stopping.receive(timeout=1)
    taken[0].ack()
    stopping.close()  # stopped with two handed out, not handled: a rolling restart
    assert pending() == [(stopping.consumer, 1)] * 2  # still pending; closing is not a delivery

    successor = subscribe()  # the default claim_idle, 60 s
    again = successor.receive(timeout=0.2)
    assert ids(again) == [e.id for e in events[1:]] and all(d.redelivered for d in again)
    assert pending() == [(successor.consumer, 2)] * 2


def test_every_entry_pending_at_close_is_handed_on_however_many_pages_that_takes(
        subscribe, publish, monkeypatch):
    from outbox.routers import redis as redis_router

    monkeypatch.setattr(redis_router, "_RELEASE_PAGE", 2)
    stopping = subscribe()
    events = publish(5)
    assert len(stopping.receive(timeout=1)) == 5
    stopping.close()

    again = subscribe().receive(timeout=0.2)
    assert ids(again) == [e.id for e in events]


def test_claims_turned_off_need_a_fixed_consumer_name(redis_url, subscribe):
    from outbox.routers import RouterError, open_subscription

    with pytest.raises(RouterError, match="claim_idle=0 needs a fixed consumer name"):
        open_subscription(redis_url + "?claim_idle=0", group="g", destinations=["order"])
    assert subscribe("?claim_idle=0&consumer=billing-0").consumer == "billing-0"


def test_close_does_not_raise_when_the_broker_is_gone(own_redis):
    from outbox.routers import open_subscription

    url, _, kill = own_redis
    subscription = open_subscription(url, group="g", destinations=["order", "invoice"])
    assert subscription.receive(timeout=0.05) == []
    kill()

    subscription.close()
    subscription.close()  # and twice


def test_a_process_starting_takes_over_at_once_what_a_dead_one_left_long_enough_ago(subscribe, publish):
    dead = subscribe(consumer="gone")
    [event] = publish(1)
    [taken] = dead.receive(timeout=1)
    dead.client.close()  # killed: no clean-up, the entry stays pending
    time.sleep(0.4)

    started = subscribe("?claim_idle=0.3")
    [again] = started.receive(timeout=0.2)  # no claim_idle of waiting of its own first
    assert again.envelope.id == taken.envelope.id == event.id and again.redelivered


def test_an_explicit_consumer_name_is_kept_and_read_again_at_once_on_reopening(subscribe, publish, client, stream):
    first = subscribe(consumer="billing-0")
    assert first.consumer == "billing-0"
    events = publish(2)
    assert ids(first.receive(timeout=1)) == [e.id for e in events]
    first.close()  # not acked: they stay pending under the fixed name

    reopened = subscribe("?consumer=billing-0")  # the URL form of the option
    again = reopened.receive(timeout=1)  # its pending entries first, without waiting for claim_idle
    assert ids(again) == [e.id for e in events] and all(d.redelivered for d in again)
    for delivery in again:
        delivery.ack()
    reopened.close()
    assert consumers(client, stream) == {}


def test_one_process_per_group_killed_mid_batch_its_successor_handles_the_unacked_entries_first_in_order(
        subscribe, publish, client, stream):
    """Per-aggregate order across a crash: the next process adopts the dead one's entries before new ones.

    The successor has a name of its own, and the default claim_idle (60 s) has
    not passed: seeing that no connection carries the dead name, and waiting
    until that name has not read for ADOPT_AFTER, brings the entries back
    ahead of the events published after them.
    """
    dying = subscribe()
    first = publish(3)
    taken = dying.receive(timeout=1)
    taken[0].ack()
    dying.client.close()  # killed: its connection drops, no clean-up runs
    later = publish(2)

    successor = subscribe()
    got = []
    while len(got) < 4:
        batch = successor.receive(timeout=1)
        assert batch, f"only {len(got)} of 4 came"
        got += batch

    assert ids(got) == [e.id for e in first[1:] + later]
    assert [d.redelivered for d in got] == [True, True, False, False]
    assert dying.consumer not in consumers(client, stream)  # the dead name left the group


def test_a_live_member_is_not_adopted_even_when_idle_for_longer_than_it_takes_to_start(subscribe, publish):
    busy = subscribe()
    events = publish(2)
    assert ids(busy.receive(timeout=1)) == [e.id for e in events]
    time.sleep(ADOPT_AFTER + 0.1)  # a long handler: no read since

    assert subscribe().receive(timeout=0.2) == []  # its connection is alive: its entries stay its own


def test_a_live_member_of_the_previous_version_is_not_adopted_while_it_polls(
        subscribe, publish, redis_url, client, stream):
    """A rolling upgrade: the old process reads as consumer ``strangler`` on connections with no name."""
    import redis

    starting = subscribe()  # creates the group
    events = publish(2)
    old = redis.Redis.from_url(redis_url)  # no client name, as the previous version connects
    [(_, held)] = old.xreadgroup("g", "strangler", {stream: ">"})
    assert len(held) == 2  # in its handler, not acked

    def busy_poll():
        """Read (and ack) a new entry: before Redis 7.2 only a read that returns entries resets idle."""
        pipe = old.pipeline()  # one transaction, so that no other member reads the entry first
        pipe.xadd(stream, {"data": b"{}"})
        pipe.xreadgroup("g", "strangler", {stream: ">"}, count=1)
        entry_id, [(_, [(read_id, _)])] = pipe.execute()
        assert read_id == entry_id
        old.xack(stream, "g", read_id)

    with polling(busy_poll):
        assert starting.receive(timeout=0.1) == []  # waited for it to age; it read again meanwhile
    assert consumers(client, stream) == {"strangler": 2, starting.consumer: 0}  # its own, still in the group

    old.close()  # now it stops reading: dead once it has not read for ADOPT_AFTER
    again = subscribe().receive(timeout=0.1)
    assert ids(again) == [e.id for e in events]


def test_a_member_whose_connection_was_killed_but_that_reads_again_within_adopt_after_keeps_its_entries(
        subscribe, publish, client, stream):
    """A connection dropped under a running process (CLIENT KILL, a proxy's idle timeout): it reconnects."""
    member, starting = subscribe(), subscribe()
    events = publish(2)
    taken = member.receive(timeout=1)
    assert ids(taken) == [e.id for e in events]
    for connection in client.client_list(_type="normal"):
        if connection["name"] == member.consumer:
            client.client_kill_filter(_id=connection["id"])
    assert member.consumer not in {c["name"] for c in client.client_list(_type="normal")}

    with polling(lambda: member.receive(timeout=0.05), after=0.1):  # its next read, once the other has looked
        assert starting.receive(timeout=0.1) == []
    assert consumers(client, stream)[member.consumer] == 2
    for delivery in taken:
        delivery.ack()
    assert client.xpending(stream, "g")["pending"] == 0  # acked by their owner: they were still its own


def test_two_processes_starting_at_once_do_not_both_take_a_dead_members_entries(
        subscribe, publish, client, stream, monkeypatch):
    """Both list the dead member's entries; the one whose claim reaches Redis second takes none of them."""
    dying = subscribe()
    events = publish(3)
    assert len(dying.receive(timeout=1)) == 3
    dying.client.close()  # killed
    time.sleep(ADOPT_AFTER + 0.1)
    first, second = subscribe(), subscribe()
    listed, claimed = threading.Event(), threading.Event()
    xclaim = second.client.xclaim

    def late_xclaim(*args, **kwargs):
        listed.set()
        claimed.wait(5)
        return xclaim(*args, **kwargs)

    monkeypatch.setattr(second.client, "xclaim", late_xclaim)
    got = []
    thread = threading.Thread(target=lambda: got.extend(second.receive(timeout=0.1)))
    thread.start()
    assert listed.wait(5)  # second has listed the entries and is about to claim them
    first_got = first.receive(timeout=0.1)
    claimed.set()
    thread.join(5)

    assert ids(first_got) == [e.id for e in events]
    assert got == []
    assert consumers(client, stream) == {first.consumer: 3, second.consumer: 0}


def test_closing_ends_the_first_receives_wait_for_a_member_to_age(subscribe, publish, monkeypatch):
    from outbox.routers import redis as redis_router

    monkeypatch.setattr(redis_router, "ADOPT_AFTER", 5.0)
    dying = subscribe()
    publish(1)
    assert len(dying.receive(timeout=1)) == 1
    dying.client.close()  # crashed just now: the next start waits up to 5 s for it to age
    starting = subscribe()
    threading.Timer(0.2, starting.close).start()
    began = time.monotonic()
    assert starting.receive(timeout=0.1) == []
    assert time.monotonic() - began < 2


def test_a_dead_member_holding_nothing_leaves_the_group_at_the_next_start(subscribe, client, stream):
    """Killed while idle, or closed when Redis was out of reach: its name would stay for ever."""
    idle = subscribe()
    assert idle.receive(timeout=0.05) == []  # alive, reading nothing
    client.xgroup_createconsumer(stream, "g", "killed-while-idle")
    time.sleep(ADOPT_AFTER + 0.1)

    starting = subscribe()
    assert starting.receive(timeout=0.05) == []
    assert consumers(client, stream) == {idle.consumer: 0, starting.consumer: 0}  # the live one stays


def test_a_member_that_holds_an_entry_again_when_it_would_be_removed_keeps_it(
    subscribe, publish, client, stream, monkeypatch
):
    """The last look and the delete are one step: an entry read between them is not dropped with its name."""
    tidying = subscribe()
    assert tidying.receive(timeout=0.05) == []
    publish(1)
    client.xreadgroup("g", "fixed-name", {stream: ">"})  # read just after tidying looked: it held nothing then
    monkeypatch.setattr(tidying, "_members", lambda _stream: [("fixed-name", 0, 60_000)])

    tidying._remove({stream: {"fixed-name"}})

    assert consumers(client, stream)["fixed-name"] == 1
    [pending] = client.xpending_range(stream, "g", "-", "+", 10)
    assert client.xrange(stream, pending["message_id"], pending["message_id"])  # still there to be acked


def test_where_scripts_are_refused_an_empty_dead_member_is_still_removed(subscribe, client, stream, monkeypatch):
    import redis

    tidying = subscribe()
    assert tidying.receive(timeout=0.05) == []
    client.xgroup_createconsumer(stream, "g", "killed-while-idle")

    def refused(*args):
        raise redis.exceptions.NoPermissionError("NOPERM User app has no permissions to run the 'eval' command")

    monkeypatch.setattr(tidying.client, "eval", refused)
    tidying._delete_if_empty(stream, "killed-while-idle")

    assert "killed-while-idle" not in consumers(client, stream)


def test_a_running_process_removes_a_dead_member_its_claim_drained(subscribe, publish, client, stream):
    running = subscribe("?claim_idle=0.3")
    assert running.receive(timeout=0.05) == []
    dying = subscribe()
    [event] = publish(1)
    assert ids(dying.receive(timeout=1)) == [event.id]
    dying.client.close()  # killed mid-handler, after the running process started: no adoption
    time.sleep(ADOPT_AFTER + 0.1)

    assert ids(running.receive(timeout=0.1)) == [event.id]  # the claim round
    assert consumers(client, stream) == {running.consumer: 1}


def test_claim_rounds_take_turns_across_streams(subscribe, publish, stream, other_stream):
    """A round ends at max_events; the stream listed first must not have every round to itself."""
    holder = subscribe(streams=[stream, other_stream])
    publish(6)
    publish(6, aggregate="invoice")
    assert len(holder.receive(max_events=12, timeout=1)) == 12  # alive, but it never acks
    claimer = subscribe("?claim_idle=0.3", streams=[stream, other_stream])
    assert claimer.receive(timeout=0.05) == []  # nothing idle yet
    time.sleep(0.4)

    rounds = []
    for _ in range(2):
        claimer._next_claim = 0.0  # a claim round is due at this receive
        rounds.append({d.destination for d in claimer.receive(max_events=3, timeout=0.05)})
    assert sorted(rounds, key=sorted) == sorted([{stream}, {other_stream}], key=sorted)


def test_idle_entries_behind_a_long_stretch_of_entries_in_flight_are_reached_by_later_claims(subscribe, publish):
    """XAUTOCLAIM scans ten times COUNT pending entries per call; the next claim goes on from there."""
    working = subscribe()
    publish(150)
    held = working.receive(max_events=150, timeout=1)
    assert len(held) == 150  # older entries, in flight and fresh
    hung = subscribe()
    stuck = publish(3)
    assert ids(hung.receive(timeout=1)) == [e.id for e in stuck]  # alive, but it never acks
    claimer = subscribe("?claim_idle=0.3")
    assert claimer.receive(timeout=0.1) == []  # its first receive: nothing idle yet
    time.sleep(0.4)

    claimed = []
    for _ in range(5):
        held[0].nack()
        held = working.receive(max_events=150, timeout=1)
        assert len(held) == 150  # read again: not idle
        claimer._next_claim = 0.0  # the claim is due at this receive
        claimed += claimer.receive(max_events=5, timeout=0.1)  # scans 50 pending entries per claim
        if claimed:
            break

    assert ids(claimed) == [e.id for e in stuck]
