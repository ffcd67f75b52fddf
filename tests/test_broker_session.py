# Broker core (sans-I/O, both runtimes): wills, take-over, sessions, limits and malformed input.
import support
from brokerpeer import Peer, connack
from midge import broker_core
from midge import codec as C


def test_will_on_keepalive_expiry_at_1_5x():
    b = broker_core.Broker()
    w = Peer(b, "w")
    connack(w)
    w.sub("will/#")
    d = Peer(b, "dev", keepalive=10, will_topic="will/dev", will_payload=b"gone", will_retain=True)
    connack(d)
    b.tick(14000)
    assert not d.closed and w.pubs() == []
    d.send(C.Ack(support.PINGREQ), 14000)
    assert d.recv() == [C.Ack(support.PINGRESP)]
    b.tick(14000 + 15000)
    assert not d.closed
    w.send(C.Ack(support.PINGREQ), 29000)
    b.tick(14000 + 15001)
    assert d.closed
    got = w.pubs()
    assert [(g.topic, g.payload) for g in got] == [("will/dev", b"gone")]
    assert b.retained["will/dev"].payload == b"gone"


def test_no_will_after_disconnect_but_after_protocol_error():
    b = broker_core.Broker()
    w = Peer(b, "w")
    w.sub("will/#")
    d = Peer(b, "d", will_topic="will/d", will_payload=b"x")
    d.send(C.Ack(support.DISCONNECT))
    b.closed(d.c, 0)
    assert w.pubs() == []
    e = Peer(b, "e", will_topic="will/e", will_payload=b"y")
    e.raw(b"\x62\x02\x00\x00")  # PUBREL with packet id 0: malformed
    assert e.closed and not w.closed
    assert [g.topic for g in w.pubs()] == ["will/e"]


def test_takeover_closes_old_and_publishes_its_will():
    b = broker_core.Broker()
    w = Peer(b, "w")
    w.sub("will/#")
    one = Peer(b, "same", will_topic="will/same", will_payload=b"old")
    connack(one)
    two = Peer(b, "same")
    assert connack(two).return_code == 0
    assert one.closed and not two.closed
    assert one.c.closing.startswith("taken over")
    assert [g.payload for g in w.pubs()] == [b"old"]
    b.closed(one.c, 0)  # the old socket going away later must not touch the new session
    assert b.sessions["same"].conn is two.c


def test_persistent_session_queue_bounded_and_drops_in_sys():
    b = broker_core.Broker({"max_queued_messages": 3, "max_queued_bytes": 10, "sys_interval": 0})
    s = Peer(b, "s", clean_session=False)
    s.sub("o/#", qos=1)
    s.send(C.Ack(support.DISCONNECT))
    b.closed(s.c, 0)
    p = Peer(b, "p")
    for i in range(5):
        p.send(C.Publish("o/t", b"%d" % i, 1, pid=i + 1))
    p.send(C.Publish("o/t", b"0123456789", 1, pid=9))  # over the byte bound
    p.send(C.Publish("o/t", b"q0", 0))  # QoS 0 is not queued for offline clients
    assert b.dropped == 3
    sysv = dict(b.sys_values(0))
    assert sysv["messages/dropped"] == 3
    mon = Peer(b, "mon")
    mon.sub("$SYS/broker/messages/dropped")
    b.publish_sys(0)
    assert [g.payload for g in mon.pubs()] == [b"3"]
    s2 = Peer(b, "s", clean_session=False)
    assert connack(s2).session_present
    assert [g.payload for g in s2.pubs()] == [b"0", b"1", b"2"]


def test_clean_session_discards_old_session():
    b = broker_core.Broker()
    s = Peer(b, "s", clean_session=False)
    s.sub("k", qos=1)
    b.closed(s.c, 0)
    s2 = Peer(b, "s", clean_session=True)
    assert not connack(s2).session_present
    Peer(b, "p").send(C.Publish("k", b"x", 1, pid=1))
    assert s2.pubs() == []


def test_session_expiry():
    b = broker_core.Broker({"persistent_client_expiration": 60})
    s = Peer(b, "s", clean_session=False)
    s.sub("k")
    b.closed(s.c, 1000)
    b.tick(60000)
    assert "s" in b.sessions
    b.tick(61001)
    assert "s" not in b.sessions and len(b.index) == 0


def test_malformed_packets_close_only_that_connection():
    bad = [
        b"\x30\x05\x00\x03a/#",  # wildcard in topic name
        b"\x36\x05\x00\x01a\x00\x01",  # QoS 3
        b"\x82\x04\x00\x01\x00\x00",  # SUBSCRIBE with empty filter and no QoS
        b"\xc0\x01\x00",  # PINGREQ with a body
        b"\x10\x02\x00\x00",  # second CONNECT (short, too)
        b"\xf0\x00",  # reserved type 15
        b"\x30\xff\xff\xff\xff\x01",  # remaining length of 5 bytes
        b"\x20\x02\x00\x00",  # CONNACK from a client
        b"\x30\x06\x00\x02\xc3\x28ab",  # ill-formed UTF-8 topic
    ]
    b = broker_core.Broker()
    ok = Peer(b, "ok")
    ok.sub("a/#")
    for i, data in enumerate(bad):
        p = Peer(b, "bad%d" % i)
        connack(p)
        p.raw(data)
        assert p.closed, data
        assert p.c.closing.startswith("protocol error"), p.c.closing
    ok.send(C.Publish("a/b", b"still here"))
    assert [g.payload for g in ok.pubs()] == [b"still here"]
    assert not ok.closed


def test_max_connections_and_max_packet_size():
    b = broker_core.Broker({"max_connections": 2, "max_packet_size": 64})
    a = Peer(b, "a")
    Peer(b, "b")
    assert b.connect("x", True, 0) is None
    a.raw(b"\x30\xc8\x01")  # header announces a 203-byte packet: refused before the body
    assert a.closed and "maximum" in a.c.closing
    b.closed(a.c, 0)
    assert b.connect("x", True, 0) is not None


def test_max_subscriptions():
    b = broker_core.Broker({"max_subscriptions": 2})
    s = Peer(b, "s")
    s.send(C.Subscribe(1, [("a", 0), ("b", 1), ("c", 2)]))
    assert s.recv()[1].codes == [0, 1, 0x80]


def test_connect_timeout():
    b = broker_core.Broker()
    p = Peer(b, None)
    b.tick(9000)
    assert not p.closed
    b.tick(10001)
    assert p.closed
