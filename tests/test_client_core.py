# The sans-I/O client session on its own: real encoded packets in, packets and bytes out,
# time passed in. Runs on CPython and MicroPython.
import support
from midge import codec
from midge.client_core import MQTTException, Session
from support import raises


def sent(s, now=0):
    """Decode and clear everything the session wants to send (written at `now`)."""
    d = codec.Decoder()
    while s.nout:  # one PUBLISH per write: sent() puts the next one in
        d.receive_data(bytes(s.out[: s.nout]))
        s.sent(now)
    out = []
    while True:
        p = d.next_packet()
        if p is None:
            return out
        out.append(p)


def feed(s, *pkts, now=0):
    for p in pkts:
        s.receive_data(codec.encode(p))
    evs = []
    while True:
        e = s.next_event(now)
        if e is None:
            return evs
        evs.append((e.type, getattr(e, "pid", None)))


def online(sp=False, **kw):
    s = Session("c1", keepalive=10, **kw)
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(sp, 0))
    return s


def test_connect_packet_and_connack():
    s = Session("dev1", user="u", password=b"pw", keepalive=30, clean_session=False)
    s.will = ("status/dev1", b"offline", 1, True)
    s.begin(0)
    (c,) = sent(s)
    assert c == codec.Connect("dev1", False, 30, "u", b"pw", "status/dev1", b"offline", 1, True)
    assert feed(s, codec.Connack(False, 0)) == [(support.CONNACK, None)]
    assert s.connected


def test_connack_refusals_name_the_reason():
    for rc, words in (
        (1, "protocol"),
        (2, "identifier"),
        (3, "unavailable"),
        (5, "not authorized"),
    ):
        s = Session("x")
        s.begin(0)
        e = raises(MQTTException, feed, s, codec.Connack(False, rc))
        assert words in str(e) and "(CONNACK %d)" % rc in str(e), str(e)
    s = Session("x")
    s.begin(0)
    e = raises(MQTTException, feed, s, codec.Connack(False, 4))
    assert str(e) == "connection refused: bad username or password (CONNACK 4)"


def test_bad_input_is_a_clear_error():
    s = online()
    s.receive_data(b"\x30\x04\x00\x09ab")  # topic length runs past the packet
    e = raises(MQTTException, s.next_event, 0)
    assert str(e).startswith("malformed packet from the broker: "), str(e)
    s = online()
    e = raises(MQTTException, feed, s, codec.Subscribe(3, [("a", 0)]))
    assert str(e) == "unexpected packet type 8 from the broker"
    s = Session("x")
    s.begin(0)
    e = raises(MQTTException, feed, s, codec.Publish("a", b"x"))
    assert "unexpected packet type 3" in str(e)


def test_qos2_received_exactly_once():
    s = online()
    p = codec.Publish("t", b"m", 2, pid=7)
    assert feed(s, p) == [(support.PUBLISH, 7)]
    assert sent(s) == [codec.Ack(support.PUBREC, 7)]
    p.dup = True
    assert feed(s, p) == []  # duplicate: answered, not delivered
    assert sent(s) == [codec.Ack(support.PUBREC, 7)]
    assert feed(s, codec.Ack(support.PUBREL, 7)) == []
    assert sent(s) == [codec.Ack(support.PUBCOMP, 7)]
    assert feed(s, codec.Publish("t", b"n", 2, pid=7)) == [(support.PUBLISH, 7)]  # a new one


def test_qos1_received_is_acked():
    s = online()
    assert feed(s, codec.Publish("t", b"m", 1, pid=9)) == [(support.PUBLISH, 9)]
    assert sent(s) == [codec.Ack(support.PUBACK, 9)]


def test_inflight_window_keeps_order():
    s = online(max_inflight=2)
    pids = [s.put("t", b"%d" % i, 1) for i in range(5)]
    out = sent(s)
    assert [p.pid for p in out] == pids[:2]
    assert feed(s, codec.Ack(support.PUBACK, pids[1])) == [(support.PUBACK, pids[1])]
    assert [p.pid for p in sent(s)] == [pids[2]]
    assert s.pending(pids[0]) and not s.pending(pids[1])
    feed(s, codec.Ack(support.PUBACK, pids[0]))
    assert [p.payload for p in sent(s)] == [b"3"]
    assert s.queued() == 3


def test_qos2_outgoing_flow():
    s = online()
    pid = s.put("t", b"x", 2)
    (p,) = sent(s)
    assert p.qos == 2 and p.pid == pid and not p.dup
    assert feed(s, codec.Ack(support.PUBREC, pid)) == []
    assert sent(s) == [codec.Ack(support.PUBREL, pid)]
    assert s.pending(pid)
    assert feed(s, codec.Ack(support.PUBCOMP, pid)) == [(support.PUBCOMP, pid)]
    assert not s.pending(pid)


def test_retransmit_in_order_with_dup_after_reconnect():
    s = online(sp=False, clean_session=False)
    a = s.put("t", b"a", 1)
    b = s.put("t", b"b", 2)
    c = s.put("t", b"c", 1)
    sent(s)
    feed(s, codec.Ack(support.PUBREC, b))
    sent(s)
    s.lost(100)
    assert not s.connected
    d = s.put("t", b"d", 1)  # offline: queued behind the others
    s.begin(200)
    sent(s)
    feed(s, codec.Connack(True, 0))
    out = sent(s)
    assert [(p.type, p.pid) for p in out] == [
        (support.PUBLISH, a),
        (support.PUBREL, b),
        (support.PUBLISH, c),
        (support.PUBLISH, d),
    ]
    assert out[0].dup and out[2].dup and not out[3].dup


def test_resubscribe_only_when_session_lost():
    s = online(clean_session=False)
    s.sub("a/#", 1)
    s.sub("b/+", 0)
    assert len(sent(s)) == 2
    s.lost(0)  # before the SUBACKs: the broker may not have them, they go again
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    (again,) = sent(s)
    assert again.topics == [("a/#", 1), ("b/+", 0)]
    feed(s, codec.Suback(again.pid, [1, 0]))
    s.lost(0)  # acknowledged: with the session present, nothing goes again
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    assert sent(s) == []
    s.lost(0)
    s.sub("c", 2)  # made while offline: goes out even with a session present
    s.unsub("b/+")
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    out = sent(s)
    assert [p.type for p in out] == [support.UNSUBSCRIBE, support.SUBSCRIBE]
    assert out[0].filters == ["b/+"] and out[1].topics == [("c", 2)]
    s.lost(0)
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(False, 0))
    (sub,) = sent(s)
    assert sub.topics == [("a/#", 1), ("c", 2)]


def test_offline_queue_bounds():
    s = Session("q", queue_count=3, queue_bytes=100)
    s.put("t", b"0", 0)
    s.put("t", b"1", 0)
    s.put("t", b"2", 1)
    s.put("t", b"3", 1)  # full: the oldest QoS 0 goes
    assert s.dropped == 1 and s.queued() == 3
    s.put("t", b"4", 0)  # full, only QoS 0 left to drop: the oldest one
    assert s.dropped == 2
    s.put("t", b"5", 1)
    e = raises(MQTTException, s.put, "t", b"6", 2)
    assert "queue full" in str(e)
    s.put("t", b"7", 0)  # QoS 0 with nothing to drop: dropped itself, counted
    assert s.dropped == 4 and s.queued() == 3
    e = raises(MQTTException, Session("q", queue_bytes=10).put, "topic", b"too long", 1)
    assert "queue full" in str(e)
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(False, 0))
    assert [p.payload for p in sent(s)] == [b"2", b"3", b"5"]


def test_bytearray_payload_is_copied_when_queued():
    s = Session("q")
    buf = bytearray(b"abc")
    s.put("t", buf, 1)
    buf[0] = 0x7A
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(False, 0))
    assert sent(s)[0].payload == b"abc"


def test_keepalive_ping_and_dead_broker():
    s = online()
    assert s.tick(0) == 10000
    s.tick(9999)
    assert sent(s) == []
    s.tick(10000)
    assert sent(s) == [codec.PINGREQ_PKT]
    s.tick(12000)
    assert sent(s) == []  # one ping outstanding
    feed(s, codec.PINGRESP_PKT, now=12000)
    s.tick(22000)
    assert sent(s) == [codec.PINGREQ_PKT]
    e = raises(MQTTException, s.tick, 27000)
    assert str(e) == "no answer from the broker for 15 s (keepalive 10 s)"


def test_connack_timeout():
    s = Session("x")
    s.begin(1000)
    assert s.tick(3000) == 3000
    s.tick(5999)
    e = raises(MQTTException, s.tick, 6000)
    assert str(e) == "timed out waiting for CONNACK after 5 s"


def test_backoff_grows_bounded_with_jitter():
    s = Session("x", backoff_min=1000, backoff_max=8000)
    waits = []
    for _ in range(8):
        s.lost(0)
        waits.append(s.tick(0))
    for w, d in zip(waits, (1000, 2000, 4000, 8000, 8000, 8000, 8000, 8000)):
        assert d // 2 <= w <= d, (w, d)
    s.begin(0)
    feed(s, codec.Connack(False, 0))
    s.lost(0)
    assert s.tick(0) <= 1000  # a good connection resets the backoff
    s.end()
    assert s.tick(0) == -1


def test_dispatch_by_filter_then_default():
    s = online()
    got = []
    s.sub("a/+", 0, lambda t, p, m: got.append(("a", t, p)))
    s.sub("b/#", 0)
    s.set_callback(lambda t, p, m: got.append(("default", t, p)))
    for t in ("a/1", "b/2", "a/1/x"):
        s.receive_data(codec.encode(codec.Publish(t, b"p")))
    assert s.handle(0) == 3
    assert got == [("a", "a/1", b"p"), ("default", "b/2", b"p"), ("default", "a/1/x", b"p")]


def test_bad_topics_and_qos_rejected():
    s = Session("x")
    raises(codec.MQTTError, s.put, "a/+", b"x")
    raises(codec.MQTTError, s.sub, "a/#/b")
    raises(ValueError, s.put, "a", b"x", 3)


# A 32-bit board's ticks: period 2**30 ms (12.4 days). Its ticks_diff reads its arguments
# as small ints, so a value outside 0..2**30-1 (raw `now + d` near the wrap) gives garbage
# there; this emulation refuses such a value instead.
_PERIOD = 1 << 30


def _board_add(a, b):
    assert 0 <= a < _PERIOD, "not a ticks value: %d" % a
    return (a + b) & (_PERIOD - 1)


def _board_diff(a, b):
    assert 0 <= a < _PERIOD and 0 <= b < _PERIOD, "not ticks values: %d, %d" % (a, b)
    return ((a - b + _PERIOD // 2) & (_PERIOD - 1)) - _PERIOD // 2


def test_timers_across_the_ticks_wrap_of_a_32_bit_board():
    from midge import client_core

    saved = client_core.ticks_add, client_core.ticks_diff
    client_core.ticks_add, client_core.ticks_diff = _board_add, _board_diff
    try:
        # each start puts another timer across the wrap: CONNACK timeout, first ping,
        # second ping, dead link, reconnect backoff
        for start in (4000, 10000, 20000, 27000, 27500):
            start = _PERIOD - start

            def at(ms, start=start):
                return _board_add(start, ms)

            s = Session("c1", keepalive=10, backoff_min=1000, backoff_max=8000)
            s.begin(at(0))
            sent(s, at(0))
            assert s.tick(at(4999)) == 1
            feed(s, codec.Connack(False, 0), now=at(1000))
            assert s.tick(at(1000)) == 9000  # 10 s after the last write
            s.tick(at(9999))
            assert sent(s, at(9999)) == []
            assert s.tick(at(10000)) == 6000  # dead 15 s after the last input
            assert sent(s, at(10000)) == [codec.PINGREQ_PKT]
            feed(s, codec.PINGRESP_PKT, now=at(12000))
            s.tick(at(19999))
            assert sent(s, at(19999)) == []
            assert s.tick(at(20000)) == 7000
            assert sent(s, at(20000)) == [codec.PINGREQ_PKT]
            s.tick(at(26999))
            e = raises(MQTTException, s.tick, at(27000))
            assert str(e) == "no answer from the broker for 15 s (keepalive 10 s)"
            for d in (1000, 2000):
                s.lost(at(27000))
                w = s.tick(at(27000))
                assert d // 2 <= w <= d, (w, d)
                assert s.tick(at(27000 + w - 1)) == 1
                assert s.tick(at(27000 + w)) == 0
            s = Session("x")
            s.begin(at(0))
            e = raises(MQTTException, s.tick, at(5000))
            assert str(e) == "timed out waiting for CONNACK after 5 s"
    finally:
        client_core.ticks_add, client_core.ticks_diff = saved


def test_subscribe_ids_stay_reserved_until_acked():
    s = online(clean_session=False)
    sp = s.sub("a", 1)
    up = s.unsub("b")
    assert sent(s)[0].pid == sp
    s._pid = sp - 1  # as after 65534 more ids: the counter comes round to them
    pids = [s.put("t", b"%d" % i, 1) for i in range(3)]
    assert sp not in pids and up not in pids, (sp, up, pids)  # MQTT-2.3.1-2
    for p in sent(s):
        feed(s, codec.Ack(support.PUBACK, p.pid))
    assert feed(s, codec.Suback(sp, [1]), codec.Ack(support.UNSUBACK, up)) == [
        (support.SUBACK, sp),
        (support.UNSUBACK, up),
    ]
    s._pid = sp - 1
    assert [s.put("t", b"x", 1), s.put("t", b"y", 2)] == [sp, up]  # free again once acked
    # the SUBSCRIBE/UNSUBSCRIBE sent after a reconnect are reserved too
    s.sub("c", 0)
    s.lost(0)
    s.unsub("a")
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(False, 0))
    sub = sent(s)[0]
    assert sub.type == support.SUBSCRIBE
    s._pid = sub.pid - 1
    assert s.put("t", b"z", 1) != sub.pid


def test_full_queue_while_connected_asks_the_driver_to_wait():
    s = online(queue_count=2)
    a = s.put("t", b"a", 1)
    s.put("t", b"b", 1)
    assert s.put("t", b"c", 1) == -1  # connected: wait for the oldest (packet id s._q[1][0])
    assert s._q[1][0] == a and s.queued() == 2
    sent(s)
    feed(s, codec.Ack(support.PUBACK, a))
    assert s.put("t", b"c", 1) > 0 and s.queued() == 2


def test_acks_that_do_not_fit_the_message_state_are_ignored():
    s = online()
    one = s.put("t", b"1", 1)
    two = s.put("t", b"2", 2)
    sent(s)
    # PUBREC/PUBCOMP for the QoS 1 message, PUBACK/PUBCOMP (before PUBREC) for the QoS 2 one
    for t, pid in (
        (support.PUBREC, one),
        (support.PUBCOMP, one),
        (support.PUBACK, two),
        (support.PUBCOMP, two),
    ):
        assert feed(s, codec.Ack(t, pid)) == []
    assert sent(s) == [] and s.pending(one) and s.pending(two)
    assert feed(s, codec.Ack(support.PUBACK, one)) == [(support.PUBACK, one)]
    feed(s, codec.Ack(support.PUBREC, two))
    assert sent(s) == [codec.Ack(support.PUBREL, two)]
    assert feed(s, codec.Ack(support.PUBCOMP, two)) == [(support.PUBCOMP, two)]
    assert s.queued() == 0


def test_end_keeps_what_is_in_the_output_before_disconnect():
    # publish() (no wait) then disconnect(): the QoS 0 message goes out before DISCONNECT
    s = online()
    s.put("t", b"last words")
    s.end()
    got = sent(s)
    assert [p.type for p in got] == [support.PUBLISH, support.DISCONNECT], got
    assert got[0].payload == b"last words"


def test_unsubscribe_then_subscribe_offline_ends_subscribed():
    # the same filter unsubscribed, then subscribed again while offline (say to change its
    # QoS): with the session present the broker must end up with the subscription
    s = online(clean_session=False)
    s.sub("a", 0)
    feed(s, codec.Suback(sent(s)[0].pid, [0]))
    s.lost(0)
    s.unsub("a")
    s.sub("a", 1)
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    out = sent(s)
    assert [p.type for p in out] == [support.UNSUBSCRIBE, support.SUBSCRIBE], out
    assert out[1].topics == [("a", 1)]


def test_unsubscribe_cut_by_a_lost_link_goes_again():
    s = online(clean_session=False)
    s.sub("a", 0)
    feed(s, codec.Suback(sent(s)[0].pid, [0]))
    s.unsub("a")
    assert sent(s)[0].type == support.UNSUBSCRIBE
    s.lost(0)  # before the UNSUBACK: the broker may not have it
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    out = sent(s)
    assert [(p.type, p.filters) for p in out] == [(support.UNSUBSCRIBE, ["a"])], out
    feed(s, codec.Ack(support.UNSUBACK, out[0].pid))
    s.lost(0)  # acknowledged: nothing goes again
    s.begin(0)
    sent(s)
    feed(s, codec.Connack(True, 0))
    assert sent(s) == []


def test_disconnect_from_a_handler_ignores_what_came_after():
    # loop_forever() ends with disconnect() from a handler; messages read in the same
    # chunk after that one are not an error ("unexpected packet")
    s = online()
    got = []

    def stop(t, p, m):
        got.append(p)
        s.end()

    s.sub("stop", 0, stop)
    sent(s)
    s.receive_data(codec.encode(codec.Publish("stop", b"1", 0)))
    s.receive_data(codec.encode(codec.Publish("stop", b"2", 1, pid=5)))
    assert s.handle(0) == 1 and got == [b"1"]
    assert [p.type for p in sent(s)] == [support.DISCONNECT]
