# Broker core (sans-I/O, both runtimes): QoS 1/2 flows, retained messages, shared encodings.
import support
from brokerpeer import Peer, connack, inflight_across_the_pid_wrap, resumed_in_order
from midge import broker_core, brokerconf
from midge import codec as C
from midge.compat import MICROPYTHON


def test_qos1_out_resent_with_dup_on_reconnect():
    b = broker_core.Broker()
    s = Peer(b, "s", clean_session=False)
    connack(s)
    s.sub("q", qos=1)
    p = Peer(b, "p")
    p.send(C.Publish("q", b"m1", 1, pid=9))
    assert p.recv()[1] == C.Ack(support.PUBACK, 9)
    m = s.pubs()[0]
    assert (m.qos, m.dup, m.payload) == (1, False, b"m1")
    b.closed(s.c, 10)  # gone without PUBACK
    s2 = Peer(b, "s", clean_session=False)
    ack = connack(s2)
    assert ack.session_present
    again = s2.pubs()
    assert len(again) == 1 and again[0].dup and again[0].pid == m.pid
    s2.send(C.Ack(support.PUBACK, m.pid))
    assert not s2.c.sess.inflight


def test_qos2_inbound_exactly_once():
    b = broker_core.Broker()
    s = Peer(b, "s")
    connack(s)
    s.sub("e", qos=2)
    p = Peer(b, "p")
    connack(p)
    pub = C.Publish("e", b"once", 2, pid=4)
    p.send(pub)
    assert p.recv() == [C.Ack(support.PUBREC, 4)]
    dup = C.Publish("e", b"once", 2, dup=True, pid=4)
    p.send(dup)  # PUBREC lost: resent before PUBREL must not be routed again
    assert p.recv() == [C.Ack(support.PUBREC, 4)]
    got = s.pubs()
    assert len(got) == 1
    p.send(C.Ack(support.PUBREL, 4))
    assert p.recv() == [C.Ack(support.PUBCOMP, 4)]
    p.send(pub)  # after PUBREL the id is free again: a new message
    assert len(s.pubs()) == 1


def test_qos2_outbound_flow():
    b = broker_core.Broker()
    s = Peer(b, "s")
    connack(s)
    s.sub("f", qos=2)
    Peer(b, "p").send(C.Publish("f", b"x", 2, pid=1))
    m = s.pubs()[0]
    s.send(C.Ack(support.PUBREC, m.pid))
    assert s.recv() == [C.Ack(support.PUBREL, m.pid)]
    assert list(s.c.sess.inflight.items()) == [(m.pid, None)]
    s.send(C.Ack(support.PUBCOMP, m.pid))
    assert not s.c.sess.inflight


def test_inflight_window_then_queue():
    b = broker_core.Broker({"max_inflight_messages": 2})
    s = Peer(b, "s")
    connack(s)
    s.sub("w", qos=1)
    p = Peer(b, "p")
    for i in range(5):
        p.send(C.Publish("w", b"%d" % i, 1, pid=i + 1))
    got = s.pubs()
    assert [g.payload for g in got] == [b"0", b"1"]
    for g in got:
        s.send(C.Ack(support.PUBACK, g.pid))
    assert [g.payload for g in s.pubs()] == [b"2", b"3"]


def test_retained_set_replace_clear():
    b = broker_core.Broker()
    p = Peer(b, "p")
    connack(p)
    live = Peer(b, "live")
    live.sub("r/#", qos=1)
    p.send(C.Publish("r/1", b"old", 1, retain=True, pid=1))
    p.send(C.Publish("r/1", b"new", 0, retain=True))
    got = live.pubs()
    assert [(g.payload, g.retain) for g in got] == [(b"old", False), (b"new", False)]
    late = Peer(b, "late")
    acks = late.sub("r/+", qos=1)
    assert acks[0].type == support.SUBACK
    assert [(g.payload, g.retain, g.qos) for g in acks[1:]] == [(b"new", True, 0)]
    p.send(C.Publish("r/1", b"", 0, retain=True))
    assert Peer(b, "later").sub("r/+")[1:] == []
    assert b.retained == {}


def test_max_retained_messages_keeps_no_new_topic_but_delivers_it():
    logs = []
    conf = brokerconf.parse("max_retained_messages 2\n")
    b = broker_core.Broker(conf, log=lambda lv, m: logs.append(m))
    b.publish_sys(0)  # the broker's own $SYS topics are not counted
    p = Peer(b, "p")
    connack(p)
    live = Peer(b, "live")
    live.sub("r/#")
    for t in ("r/1", "r/2", "r/3", "r/1", "r/4"):
        p.send(C.Publish(t, t.encode(), 0, retain=True))
    assert [g.payload for g in live.pubs()] == [b"r/1", b"r/2", b"r/3", b"r/1", b"r/4"]
    late = Peer(b, "late").sub("r/#")[1:]
    assert sorted((g.topic, g.payload) for g in late) == [("r/1", b"r/1"), ("r/2", b"r/2")]
    assert logs == ["max_retained_messages reached: 'r/3' not kept"]  # once, not per drop
    assert ("retained messages/dropped", 2) in b.sys_values(0)
    p.send(C.Publish("r/2", b"", 0, retain=True))  # clearing always works, and makes room
    p.send(C.Publish("r/4", b"kept", 0, retain=True))
    p.send(C.Publish("r/1", b"replaced", 0, retain=True))  # so does replacing at the limit
    assert (b.retained["r/1"].payload, b.retained["r/4"].payload) == (b"replaced", b"kept")
    assert "r/2" not in b.retained and "r/3" not in b.retained


def _twelve_retained_for_a_small_buffer():
    """12 retained QoS 0 messages r/00..r/11 of 100 B, then "s" (whose output may hold
    330 B) subscribes to r/#: (broker, publisher, s, [(topic, payload)] s got first). Small
    sizes: these tests also run in a 128K board's heap, after the rest of the module."""
    b = broker_core.Broker({"max_write_buffer": 330})
    p = Peer(b, "p")
    connack(p)
    for i in range(12):
        p.send(C.Publish("r/%02d" % i, bytes([i]) * 100, 0, retain=True))
    s = Peer(b, "s")
    connack(s)
    return b, p, s, [(g.topic, g.payload) for g in s.sub("r/#") if g.type == support.PUBLISH]


def test_retained_on_subscribe_paced_by_the_write_buffer_never_dropped():
    # The first SUBSCRIBE gets what fits, each time its driver has written the rest follows
    # (resume), and none is dropped as a slow reader's live QoS 0 message would be.
    b, p, s, got = _twelve_retained_for_a_small_buffer()
    assert 1 <= len(got) <= 4, got  # a buffer's worth, not all twelve at once
    rounds = 0
    while s.c.owed:
        b.resume(s.c)  # what a driver does once c's output is written
        got += [(g.topic, g.payload) for g in s.pubs()]
        rounds += 1
    got = [t for t, _ in got]
    assert sorted(got) == ["r/%02d" % i for i in range(12)] and rounds >= 2, (got, rounds)
    assert b.dropped == 0
    p.send(C.Publish("r/00", b"live", 0))  # live traffic goes on as before
    assert [g.payload for g in s.pubs()] == [b"live"]


def test_retained_owed_to_a_subscriber_is_the_current_value():
    # A retained message replaced or cleared while the subscriber's paced retained messages
    # are still owed: it gets the value the broker holds now, never the older one last.
    b, p, s, got = _twelve_retained_for_a_small_buffer()
    owed = sorted(set("r/%02d" % i for i in range(12)) - set(t for t, _ in got))
    assert len(owed) >= 2, got
    p.send(C.Publish(owed[0], b"new", 0, retain=True))  # replaced
    p.send(C.Publish(owed[1], b"", 0, retain=True))  # cleared
    while s.c.owed:
        b.resume(s.c)
        got += [(g.topic, g.payload) for g in s.pubs()]
    last = dict(got)
    assert last[owed[0]] == b"new" and last.get(owed[1], b"") == b"", (owed, got)


def test_retained_qos1_owed_when_the_link_breaks_waits_in_the_persistent_session():
    # The link breaks while QoS 1 retained messages are still owed (paced): the persistent
    # session keeps them, as it keeps any QoS 1 message for it; the client, finding its
    # session present, does not subscribe again and still gets every one.
    b = broker_core.Broker({"max_write_buffer": 400})
    p = Peer(b, "p")
    connack(p)
    for i in range(12):
        p.send(C.Publish("r/%02d" % i, bytes([i]) * 100, 1, retain=True, pid=i + 1))
    s = Peer(b, "s", clean_session=False)
    connack(s)
    got = set(g.topic for g in s.sub("r/#", qos=1) if g.type == support.PUBLISH)
    assert s.c.owed
    b.closed(s.c, 0)
    s2 = Peer(b, "s", clean_session=False)
    assert connack(s2).session_present
    got |= set(g.topic for g in s2.pubs())
    assert sorted(got) == ["r/%02d" % i for i in range(12)], got


def test_retained_qos1_on_subscribe_do_not_overflow_the_session_queue():
    # More retained QoS 1 messages than the in-flight window and the queue hold: they are
    # owed, not dropped as "queue full", and follow as the subscriber acknowledges.
    b = broker_core.Broker({"max_inflight_messages": 2, "max_queued_messages": 3})
    p = Peer(b, "p")
    connack(p)
    for i in range(10):
        p.send(C.Publish("r/%d" % i, b"%d" % i, 1, retain=True, pid=i + 1))
    s = Peer(b, "s")
    connack(s)
    todo = [g for g in s.sub("r/#", qos=1) if g.type == support.PUBLISH]
    got = []
    while todo and len(got) < 20:
        m = todo.pop(0)
        got.append(m.topic)
        s.send(C.Ack(support.PUBACK, m.pid))
        if s.c.owed:
            b.resume(s.c)  # what a driver does once c's output is written
        todo += s.pubs()
    assert sorted(got) == ["r/%d" % i for i in range(10)] and b.dropped == 0, got


def test_board_defaults_bound_packets_queues_and_retained():
    board = (16384, 16384, 100, 100) if MICROPYTHON else (0, 0, 0, 1000)
    c = broker_core.Broker().conf
    keys = ("max_packet_size", "max_queued_bytes", "max_retained_messages", "max_queued_messages")
    assert tuple(c[k] for k in keys) == board
    assert broker_core.Broker({"max_packet_size": 0}).conf["max_packet_size"] == 0
    assert broker_core.Broker({"max_retained_messages": 0}).conf["max_retained_messages"] == 0
    p = Peer(broker_core.Broker(), "big")
    connack(p)
    p.raw(bytes((0x30, 0xA0, 0x9C, 0x01)))  # a PUBLISH of 20000 bytes: its fixed header
    assert p.closed == MICROPYTHON


def test_one_encoding_shared_by_subscribers():
    b = broker_core.Broker()
    subs = [Peer(b, "s%d" % i) for i in range(3)]
    for s in subs:
        connack(s)
        s.sub("x")
    Peer(b, "p").send(C.Publish("x", b"payload"))
    heads = [s.c.out[0] for s in subs]
    pays = [s.c.out[1] for s in subs]
    assert heads[0] is heads[1] is heads[2]
    assert pays[0] is pays[1] is pays[2]


def test_inflight_resent_in_publish_order_across_the_pid_wrap():
    # MQTT-4.6.0-1; MicroPython's dicts do not keep insertion order
    b = broker_core.Broker({"sys_interval": 0})
    inflight_across_the_pid_wrap(b)
    resumed_in_order(b)


def test_acks_complete_only_the_matching_qos_and_state():
    b = broker_core.Broker({"sys_interval": 0})
    s = Peer(b, "s")
    connack(s)
    s.sub("one", qos=1)
    s.sub("two", qos=2)
    p = Peer(b, "p")
    p.send(C.Publish("one", b"1", 1, pid=1))
    p.send(C.Publish("two", b"2", 2, pid=2))
    one, two = s.pubs()
    fl = s.c.sess.inflight
    s.send(C.Ack(support.PUBCOMP, one.pid))  # PUBCOMP for a QoS 1 message
    s.send(C.Ack(support.PUBREC, one.pid))  # PUBREC for a QoS 1 message
    s.send(C.Ack(support.PUBACK, two.pid))  # PUBACK for a QoS 2 message
    s.send(C.Ack(support.PUBCOMP, two.pid))  # PUBCOMP before PUBREC
    assert fl[one.pid] is not None and fl[two.pid] is not None and len(fl) == 2
    s.send(C.Ack(support.PUBREC, two.pid))
    assert fl[two.pid] is None
    s.send(C.Ack(support.PUBACK, two.pid))  # still not the right one
    assert two.pid in fl
    s.send(C.Ack(support.PUBCOMP, two.pid))
    s.send(C.Ack(support.PUBACK, one.pid))
    assert len(fl) == 0


def test_publisher_ack_sent_before_routing_once_per_read():
    # the driver's send_now hook: the ack of a read's last PUBLISH goes out before routing
    b = broker_core.Broker({"sys_interval": 0})
    s = Peer(b, "s")
    connack(s)
    s.sub("t", qos=1)
    p = Peer(b, "p")
    connack(p)
    seen = []
    b.send_now = lambda c: seen.append((c is p.c, b.take_output(c), s.c.outn))
    p.send(C.Publish("t", b"1", 1, pid=5))
    assert seen == [(True, C.encode(C.Ack(support.PUBACK, 5)), 0)]  # s has nothing yet
    assert [m.payload for m in s.pubs()] == [b"1"]
    seen = []
    p.raw(C.encode(C.Publish("t", b"2", 1, pid=6)) + C.encode(C.Publish("t", b"3", 1, pid=7)))
    acks = C.encode(C.Ack(support.PUBACK, 6)) + C.encode(C.Ack(support.PUBACK, 7))
    assert len(seen) == 1 and seen[0][:2] == (True, acks) and seen[0][2] > 0  # one write
    assert [m.payload for m in s.pubs()] == [b"2", b"3"]
