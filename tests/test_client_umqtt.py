# midge.umqtt.MQTTClient used the way umqtt.simple sketches use it, against real Mosquitto.
import support
from midge.client import Client
from midge.compat import ticks_diff, ticks_ms
from midge.umqtt import MQTTClient
from support import raises, unique


def client(**kw):
    host, port = support.mosquitto()
    return MQTTClient(unique("u").encode(), host, port, **kw)


def test_umqtt_sketch_publish_subscribe():
    topic = unique("u/t").encode()
    got = []
    c = client(keepalive=30)
    c.set_callback(lambda t, m: got.append((t, m)))
    assert c.connect() is False
    c.subscribe(topic)
    c.publish(topic, b"one")
    c.publish(topic, "two", qos=1)
    c.publish(topic, b"three", retain=False, qos=2)
    t0 = ticks_ms()
    while len(got) < 3 and ticks_diff(ticks_ms(), t0) < 3000:
        c.wait_msg()
    assert got == [(topic, b"one"), (topic, b"two"), (topic, b"three")]
    t0 = ticks_ms()
    c.check_msg()  # nothing waiting: returns at once
    assert ticks_diff(ticks_ms(), t0) < 500
    c.ping()
    c.wait_msg()  # PINGRESP
    c.disconnect()


def test_umqtt_last_will_and_errors():
    topic = unique("u/will")
    w = client()
    got = []
    w.set_callback(lambda t, m: got.append(m))
    w.connect()
    w.subscribe(topic, 1)
    d = client(keepalive=10)
    d.set_last_will(topic, b"gone", qos=1)
    d.connect()
    d.sock.close()
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 3000:
        w.wait_msg()
    assert got == [b"gone"]
    w.disconnect()
    host, _ = support.mosquitto()
    e = raises(OSError, MQTTClient("x", host, 1).connect)  # umqtt code catches OSError
    assert "cannot connect" in str(e)


def observer(topic_filter):
    """A midge Client recording (topic, payload, qos, retain) of what the broker sends it."""
    host, port = support.mosquitto()
    o = Client(unique("obs"), host, port, keepalive=10)
    o.connect()
    got = []
    o.set_callback(lambda t, p, m: got.append((t, p, m.qos, m.retain)))
    o.subscribe(topic_filter, 2)
    return o, got


def loop_until(c, done, ms=3000):
    t0 = ticks_ms()
    while not done() and ticks_diff(ticks_ms(), t0) < ms:
        c.loop(10)
    return done()


def test_umqtt_positional_publish_and_retained_will():
    base = unique("u/pos")
    obs, got = observer(base + "/#")
    c = client(keepalive=10)
    c.set_last_will((base + "/will").encode(), b"gone", True, 1)  # (topic, msg, retain, qos)
    c.connect()
    c.publish((base + "/a").encode(), b"q1", False, 1)  # umqtt's order: retain before qos
    c.publish((base + "/b").encode(), b"q2", False, 2)
    c.publish((base + "/r").encode(), b"kept", True, 1)
    assert c.queued() == 0  # QoS 1 and 2 returned once acknowledged
    c.sock.close()  # gone without DISCONNECT: the broker publishes the will
    assert loop_until(obs, lambda: len(got) == 4), got
    assert got == [
        (base + "/a", b"q1", 1, False),
        (base + "/b", b"q2", 2, False),
        (base + "/r", b"kept", 1, False),
        (base + "/will", b"gone", 1, False),
    ]
    obs.disconnect()
    late, kept = observer(base + "/#")
    assert loop_until(late, lambda: len(kept) == 2), kept
    assert sorted(kept) == [(base + "/r", b"kept", 1, True), (base + "/will", b"gone", 1, True)]
    late.publish(base + "/r", b"", 0, True)  # clear the retained messages
    late.publish(base + "/will", b"", 0, True)
    late.disconnect()


def test_umqtt_user_password():
    host, port = support.mosquitto("auth")
    c = MQTTClient(unique("u").encode(), host, port, "drone", "wrong")
    e = raises(OSError, c.connect)
    assert str(e) == "connection refused: not authorized (CONNACK 5)", str(e)
    c = MQTTClient(unique("u").encode(), host, port, "drone", support.auth_password(), 10)
    assert c.connect() is False
    topic = unique("u/auth").encode()
    got = []
    c.set_callback(lambda t, m: got.append((t, m)))
    c.subscribe(topic, 1)
    c.publish(topic, b"in", False, 1)  # while it waits for PUBACK, the copy may come too
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 3000:
        c.wait_msg()
    assert got == [(topic, b"in")]
    c.disconnect()


def test_umqtt_check_msg_returns_at_once_wait_msg_blocks():
    topic = unique("u/w").encode()
    got = []
    c = client(keepalive=10)  # no ping of its own within this test
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect()
    c.subscribe(topic, 1)
    obs, _ = observer("x/" + unique("none"))
    t0 = ticks_ms()
    c.check_msg()  # nothing there: returns at once
    assert ticks_diff(ticks_ms(), t0) < 200 and got == []
    obs.publish(topic, b"1", 1, wait=True)
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 3000:
        t1 = ticks_ms()
        c.check_msg()  # delivers what arrived, never waits for more
        assert ticks_diff(ticks_ms(), t1) < 200
    assert got == [(topic, b"1")]
    obs.publish(topic, b"2", 1, wait=True)
    c.wait_msg()  # one call: blocks until the message is there and delivers it
    assert got == [(topic, b"1"), (topic, b"2")]
    obs.disconnect()
    c.disconnect()


def test_umqtt_ping_is_answered():
    c = client(keepalive=10)  # wait_msg() returns by itself only when a ping is due (10 s)
    c.connect()
    for _ in range(2):
        t0 = ticks_ms()
        c.ping()
        c.wait_msg()  # returns as the PINGRESP arrives
        assert ticks_diff(ticks_ms(), t0) < 2000
    assert c.connected and c.last_error is None
    c.disconnect()


def test_umqtt_simple_sketch_unchanged():
    # An umqtt.simple sketch as it is written for a board; only its import line changed.
    host, port = support.mosquitto()
    SERVER, PORT = host, port
    CLIENT_ID = unique("board").encode()
    TOPIC = unique("u/sketch").encode()
    received = []

    def sub_cb(topic, msg):
        received.append((topic, msg))
        if msg == b"ping":  # answer from inside the callback, as sketches do
            c.publish(TOPIC + b"/reply", b"pong", qos=1)

    c = MQTTClient(CLIENT_ID, SERVER, PORT, keepalive=30)
    c.set_callback(sub_cb)
    c.set_last_will(TOPIC + b"/status", b"offline", retain=True)
    c.connect()
    c.publish(TOPIC + b"/status", b"online", retain=True)
    c.subscribe(TOPIC + b"/#")
    c.publish(TOPIC + b"/cmd", b"ping")
    t0 = ticks_ms()
    while len(received) < 3 and ticks_diff(ticks_ms(), t0) < 3000:
        c.check_msg()
    c.disconnect()  # a clean goodbye: the will stays unpublished
    assert received == [
        (TOPIC + b"/status", b"online"),
        (TOPIC + b"/cmd", b"ping"),
        (TOPIC + b"/reply", b"pong"),
    ]
    late, kept = observer(TOPIC.decode() + "/status")
    assert loop_until(late, lambda: kept)
    assert kept == [(TOPIC.decode() + "/status", b"online", 0, True)]
    late.publish(TOPIC + b"/status", b"", 0, True)
    late.disconnect()
