"""midge's broker against real peers (paho-mqtt, mosquitto_pub/sub, raw sockets), with the
broker running on CPython (asyncio streams and the Protocol driver) and on MicroPython."""

import queue
import shutil
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
import support
from brokerproc import Broker, Raw, assert_clean, available

RUNTIMES = [r for r in ("cpython", "fast", "micropython") if available(r)]


@pytest.fixture(params=RUNTIMES)
def broker(request, tmp_path):
    """A fresh broker per test (nothing carries over between tests), logging with -v; its
    output must show no sign of a bug."""
    conf = tmp_path / "midge.conf"
    conf.write_text("sys_interval 1\nmax_queued_messages 5\n")
    b = Broker(request.param, str(conf), args=["-v"])
    yield b
    assert_clean(b.kill())


class Paho:
    def __init__(self, port, cid="", clean=True, will=None, keepalive=60):
        self.msgs = queue.Queue()
        self.flags = queue.Queue()
        self.gone = queue.Queue()
        c = self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean
        )
        c.on_message = lambda cl, ud, m: self.msgs.put(m)
        c.on_connect = lambda cl, ud, fl, rc, pr: self.flags.put((fl.session_present, rc))
        c.on_disconnect = lambda cl, ud, fl, rc, pr: self.gone.put(rc)
        if will:
            c.will_set(*will)
        c.connect("127.0.0.1", port, keepalive)
        c.loop_start()
        self.connack = self.flags.get(timeout=5)

    def sub(self, filt, qos=0):
        done = queue.Queue()
        self.c.on_subscribe = lambda cl, ud, mid, codes, pr: done.put(codes)
        self.c.subscribe(filt, qos)
        return done.get(timeout=5)

    def get(self, timeout=5):
        return self.msgs.get(timeout=timeout)

    def none(self, wait=0.3):
        try:
            m = self.msgs.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError("unexpected message %s %r" % (m.topic, m.payload))

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_start_line_says_where(broker):
    assert "listening on 127.0.0.1:%d" % broker.port in broker.first_line


def test_paho_qos_0_1_2_with_downgrade(broker):
    s = Paho(broker.port)
    assert [int(c.value) for c in s.sub("pq/#", 1)] == [1]
    p = Paho(broker.port)
    for q in (0, 1, 2):
        p.c.publish("pq/%d" % q, b"m%d" % q, q).wait_for_publish(5)
    got = sorted((m.topic, m.payload, m.qos) for m in (s.get(), s.get(), s.get()))
    assert got == [("pq/0", b"m0", 0), ("pq/1", b"m1", 1), ("pq/2", b"m2", 1)]
    s.stop()
    p.stop()


@pytest.mark.skipif(not shutil.which("mosquitto_pub"), reason="mosquitto clients not installed")
def test_mosquitto_tools_retained_set_replace_clear(broker):
    port = str(broker.port)

    def pub(*a):
        subprocess.run(
            ["mosquitto_pub", "-p", port, "-t", "mr/x", "-r"] + list(a), check=True, timeout=5
        )

    def sub():
        r = subprocess.run(
            ["mosquitto_sub", "-p", port, "-t", "mr/+", "-C", "1", "-W", "1", "-F", "%r %t %p"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return r.stdout.strip()

    pub("-m", "one", "-q", "1")
    pub("-m", "two", "-q", "2")
    assert sub() == "1 mr/x two"
    pub("-n")
    assert sub() == ""


def test_takeover_closes_old_and_publishes_will(broker):
    w = Paho(broker.port)
    w.sub("tw/#")
    a = Paho(broker.port, "same-id", will=("tw/a", b"old gone"))
    b = Paho(broker.port, "same-id")
    assert b.connack == (False, 0)
    a.gone.get(timeout=5)
    m = w.get()
    assert (m.topic, m.payload) == ("tw/a", b"old gone")
    a.c.loop_stop()
    b.stop()
    w.stop()


def test_will_on_keepalive_expiry(broker):
    w = Paho(broker.port)
    w.sub("kw/#")
    r = Raw(broker.port)
    assert r.connect("silent", keepalive=1, will_topic="kw/s", will_payload=b"bye").return_code == 0
    t0 = time.monotonic()
    m = w.get(timeout=5)
    waited = time.monotonic() - t0
    assert (m.topic, m.payload) == ("kw/s", b"bye")
    # expiry after 1.5 x keepalive idle, found by a check once a second: 1.5 to 2.5 s, plus
    # slack for a loaded machine on the upper bound (the lower bound is the spec's)
    assert 1.4 <= waited <= 5.0, waited
    assert r.recv() is None  # and the broker closed the socket
    w.stop()


def test_qos2_duplicate_before_pubrel_not_rerouted(broker):
    C = Raw(broker.port).codec
    s = Paho(broker.port)
    s.sub("q2/x", 2)
    r = Raw(broker.port)
    r.connect("dup-sender")
    pub = C.Publish("q2/x", b"exactly once", 2, pid=7)
    r.send(pub)
    assert r.recv() == C.Ack(support.PUBREC, 7)
    r.send(C.Publish("q2/x", b"exactly once", 2, dup=True, pid=7))
    assert r.recv() == C.Ack(support.PUBREC, 7)
    r.send(C.Ack(support.PUBREL, 7))
    assert r.recv() == C.Ack(support.PUBCOMP, 7)
    assert s.get().payload == b"exactly once"
    s.none()
    s.stop()


def _connect_bytes(flags, name=b"MQTT", level=4, payload=b"\x00\x01c"):
    body = b"\x00\x04" + name + bytes((level, flags)) + b"\x00\x3c" + payload
    return bytes((0x10, len(body))) + body


# (what is wrong, bytes) sent after a good CONNECT
MALFORMED = [
    ("wildcard in a PUBLISH topic", b"\x30\x05\x00\x03a/#"),
    ("reserved packet type 15", b"\xf0\x00"),
    ("SUBSCRIBE without its QoS byte", b"\x82\x03\x00\x01\x00"),
    ("remaining length over 4 bytes", b"\x30\xff\xff\xff\xff\x7f"),
    ("SUBSCRIBE flags 0000", b"\x80\x06\x00\x01\x00\x01a\x00"),
    ("SUBSCRIBE with no filter", b"\x82\x02\x00\x01"),
    ("SUBSCRIBE QoS 3", b"\x82\x06\x00\x01\x00\x01a\x03"),
    ("UNSUBSCRIBE with no filter", b"\xa2\x02\x00\x01"),
    ("PUBLISH QoS 3", b"\x36\x05\x00\x01a\x00\x01"),
    ("PUBLISH QoS 1 packet id 0", b"\x32\x05\x00\x01a\x00\x00"),
    ("ill-formed UTF-8 topic", b"\x30\x04\x00\x02\xc3\x28"),
    ("U+0000 in a topic", b"\x30\x04\x00\x02a\x00"),
    ("topic length past the packet", b"\x30\x03\x00\x05a"),
    ("second CONNECT", _connect_bytes(2)),
    ("CONNACK from a client", b"\x20\x02\x00\x00"),
    ("PUBREL flags 0000", b"\x60\x02\x00\x01"),
    ("PINGREQ with a body", b"\xc0\x01\x00"),
    ("PUBACK of length 1", b"\x40\x01\x00"),
    ("DISCONNECT flags 0001", b"\xe1\x00"),
]

# (what is wrong, bytes) sent as the first packet
BAD_CONNECT = [
    ("PUBLISH before CONNECT", b"\x30\x05\x00\x01a\x00\x01"),
    ("CONNECT without a payload", b"\x10\x02\x00\x00"),
    ("CONNECT reserved flag set", _connect_bytes(3)),
    ("protocol name MQTX", _connect_bytes(2, b"MQTX")),
    ("password flag without user name", _connect_bytes(0x42, payload=b"\x00\x01c\x00\x01p")),
    ("will QoS 3", _connect_bytes(0x1E, payload=b"\x00\x01c\x00\x01w\x00\x01m")),
    ("will retain without will flag", _connect_bytes(0x22)),
]


def test_malformed_packets_close_only_that_connection(broker):
    """Each malformed packet closes its own connection as a protocol error (the broker says
    so for that peer: a crash in the broker would not), and other clients go on."""
    ok = Paho(broker.port)
    ok.sub("mal/#")
    for why, data in MALFORMED + BAD_CONNECT:
        r = Raw(broker.port)
        if (why, data) in MALFORMED:
            assert r.connect("bad").return_code == 0
        port = r.sock.getsockname()[1]
        r.send(data)
        p = r.recv()
        assert p is None or p.type == r.support.CONNACK and p.return_code != 0, (why, p)
        if p is not None:
            assert r.recv() is None, why
        line = "(127.0.0.1:%d): protocol error" % port
        broker.wait_output(line, timeout=5)
        r.close()
    ok.c.publish("mal/1", b"alive", 1).wait_for_publish(5)
    assert ok.get().payload == b"alive"
    ok.stop()
    assert_clean(broker.output())


def test_persistent_session_offline_queue_bounded(broker):
    s = Paho(broker.port, "offline-1", clean=False)
    s.sub("oq/#", 1)
    s.stop()
    p = Paho(broker.port)
    for i in range(8):
        p.c.publish("oq/t", b"%d" % i, 1).wait_for_publish(5)
    s2 = Paho(broker.port, "offline-1", clean=False)
    assert s2.connack[0] is True
    got = [s2.get().payload for _ in range(5)]
    assert got == [b"0", b"1", b"2", b"3", b"4"]  # max_queued_messages 5: the rest dropped
    s2.none()
    mon = Paho(broker.port)
    mon.sub("$SYS/broker/messages/dropped")
    # the retained value may predate the drops; the next one (1 s later) has them
    assert max(int(mon.get(timeout=3).payload) for _ in range(2)) == 3
    for c in (s2, p, mon):
        c.stop()


def test_sys_topics_not_matched_by_hash(broker):
    a = Paho(broker.port)
    a.sub("#")
    a.none(1.5)  # $SYS is published every second but '#' must not see it
    b = Paho(broker.port)
    b.sub("$SYS/broker/clients/connected")
    assert max(int(b.get(timeout=3).payload) for _ in range(2)) == 2  # a fresh broker: a and b
    a.stop()
    b.stop()


@pytest.mark.skipif(not available("micropython"), reason="no micropython")
def test_retained_on_subscribe_all_arrive_from_a_128k_board(tmp_path):
    # 30 retained messages of 800 B (24 KB) through a broker whose heap lets one client's
    # output hold only a few KB: they go out a buffer's worth at a time, none is dropped.
    conf = tmp_path / "midge.conf"
    conf.write_text("sys_interval 0\n")
    b = Broker("micropython", str(conf), heap="128K")
    try:
        p = Paho(b.port)
        for i in range(30):  # QoS 1: each PUBACK says it is stored before the subscriber comes
            m = p.c.publish("rp/%02d" % i, bytes([65 + i % 26]) * 800, 1, retain=True)
            m.wait_for_publish(5)
        p.stop()
        s = Paho(b.port)
        s.sub("rp/#")
        got = sorted(s.get().topic for _ in range(30))
        assert got == ["rp/%02d" % i for i in range(30)]
        s.stop()
    finally:
        assert_clean(b.kill())


def test_retained_qos1_on_subscribe_beyond_window_and_queue_all_arrive(broker):
    # 40 retained QoS 1 messages for a QoS 1 subscriber, with an in-flight window of 20 and
    # max_queued_messages 5: they follow paho's acknowledgements, none dropped as queue full
    p = Paho(broker.port)
    for i in range(40):
        p.c.publish("rq/%02d" % i, b"%d" % i, 1, retain=True).wait_for_publish(5)
    p.stop()
    s = Paho(broker.port)
    s.sub("rq/#", 1)
    got = sorted(s.get().topic for _ in range(40))
    assert got == ["rq/%02d" % i for i in range(40)]
    s.none()
    s.stop()
