# The blocking client against a real Mosquitto, on CPython and MicroPython.
import gc

import support
from midge.client import Client, MQTTException
from midge.compat import MICROPYTHON, ticks_diff, ticks_ms
from support import raises, unique


def client(prefix="c", kind="anon", **kw):
    host, port = support.mosquitto(kind)
    return Client(unique(prefix), host, port, **kw)


def run(clients, done, ms=5000):
    """Loop the clients until done() or ms pass; return done()."""
    t0 = ticks_ms()
    while not done() and ticks_diff(ticks_ms(), t0) < ms:
        for c in clients:
            c.loop(10)
    return done()


def collector(c):
    got = []
    c.set_callback(lambda t, p, m: got.append((t, p, m.qos, m.retain)))
    return got


def test_qos_0_1_2_both_directions():
    topic = unique("t/qos")
    c = client()
    assert c.connect() is False and c.connected
    got = collector(c)
    assert c.subscribe(topic, 2) == 2
    for q in (0, 1, 2):
        c.publish(topic, b"m%d" % q, q, wait=True)
    assert run([c], lambda: len(got) == 3)
    assert got == [(topic, b"m%d" % q, q, False) for q in (0, 1, 2)]
    c.disconnect()
    assert not c.connected


def test_auth_refused_then_accepted():
    c = client(kind="auth", user="drone", password="wrong")
    e = raises(MQTTException, c.connect)
    # Mosquitto 2 answers a bad password with 5 (code 4 is covered in test_client_core)
    assert str(e) == "connection refused: not authorized (CONNACK 5)"
    assert not c.connected
    c = client(kind="auth", user="drone", password=support.auth_password())
    c.connect()
    assert c.connected
    c.disconnect()


def test_unreachable_port_is_a_clear_error():
    host, port = support.mosquitto()
    c = Client("x", host, 1, reconnect=True)
    e = raises(MQTTException, c.connect, 2000)
    assert str(e).startswith("cannot connect to %s:1: " % host), str(e)
    e = raises(MQTTException, c.loop)
    assert str(e) == "not connected"


def test_window_of_qos1_in_order():
    topic = unique("t/win")
    sub = client()
    sub.connect()
    got = collector(sub)
    sub.subscribe(topic, 1)
    pub = client(max_inflight=4, queue_count=8)
    pub.connect()
    for i in range(100):
        pub.publish(topic, b"%d" % i, 1)
    assert run([pub, sub], lambda: len(got) == 100 and not pub.queued())
    assert [int(g[1]) for g in got] == list(range(100))
    pub.disconnect()
    sub.disconnect()


def test_will_retain_and_handlers():
    base = unique("t/will")
    watcher = client()
    watcher.connect()
    seen = []
    watcher.subscribe(base + "/status", 1, lambda t, p, m: seen.append(("status", p)))
    other = collector(watcher)
    watcher.subscribe(base + "/+/x", 0)
    dying = client(keepalive=5)
    dying.set_will(base + "/status", b"offline", 1, True)
    dying.connect()
    dying.publish(base + "/a/x", b"hi", 0)
    dying.loop(0)  # what publish() put in the output goes out at the next loop step
    dying.sock.close()  # gone without DISCONNECT: the broker publishes the will
    assert run([watcher], lambda: seen and other)
    assert seen == [("status", b"offline")]
    assert other == [(base + "/a/x", b"hi", 0, False)]
    late = client()
    late.connect()
    got = collector(late)
    late.subscribe(base + "/status", 0)
    assert run([late], lambda: got)
    assert got == [(base + "/status", b"offline", 0, True)]
    late.publish(base + "/status", b"", 0, retain=True)  # clear the retained will
    late.disconnect()
    watcher.disconnect()


class PingCounter(Client):
    """Counts the writes that are one PINGREQ (sent() is told of every write)."""

    pings = 0

    def sent(self, now):
        if bytes(self.out[: self.nout]) == b"\xc0\x00":
            self.pings += 1
        Client.sent(self, now)


def test_keepalive_pings_an_idle_link():
    host, port = support.mosquitto()
    c = PingCounter(unique("ka"), host, port, keepalive=1)
    c.connect()
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < 2600:
        c.loop(100)
    # one PINGREQ per idle second; the client's own 1.5 s dead-link check proves each was
    # answered (Mosquitto 2.0 itself drops a silent keepalive-1 client only after ~5 s)
    assert c.pings >= 2, c.pings
    assert c.connected and c.reconnects == 0 and c.last_error is None, c.last_error
    c.disconnect()


def test_reconnect_keeps_session_subscriptions_and_queue():
    topic = unique("t/rc")
    c = client(clean_session=False, keepalive=10, backoff_min=50)
    assert c.connect() is False
    got = collector(c)
    c.subscribe(topic, 1)
    c.sock.close()  # the link dies under the client
    c.publish(topic, b"while down", 1)  # fails to go out at the next step: stays queued
    assert run([c], lambda: c.reconnects == 1 and c.connected)
    assert c.reconnects == 1 and c.session_present and c.last_error
    assert run([c], lambda: got)
    assert got == [(topic, b"while down", 1, False)]
    c.disconnect()
    c2 = client(clean_session=True, backoff_min=50)
    c2.connect()
    got2 = collector(c2)
    c2.subscribe(topic, 0)
    c2.sock.close()
    assert run([c2], lambda: c2.reconnects == 1 and c2.connected)
    assert not c2.session_present  # so it subscribed again
    c2.publish(topic, b"after", 0)
    assert run([c2], lambda: got2)
    assert got2[0][1] == b"after"
    c2.disconnect()


def test_publish_before_connect_is_queued():
    topic = unique("t/early")
    sub = client()
    sub.connect()
    got = collector(sub)
    sub.subscribe(topic, 1)
    c = client()
    c.publish(topic, b"early", 1)
    c.connect()
    assert run([c, sub], lambda: got and not c.queued())
    assert got[0][1] == b"early"
    c.disconnect()
    sub.disconnect()


def test_full_queue_waits_by_bytes_for_a_non_ascii_topic():
    topic = unique("t/température")  # 12 characters, 13 bytes in UTF-8
    tb = len(topic.encode())
    c = client(queue_bytes=2 * (tb + 1) - 1)  # one 1-byte message, and the next by str length
    c.connect()
    c.publish(topic, b"1", 1)  # in flight, not acknowledged yet
    assert c.publish(topic, "2", 1)  # waits for PUBACK instead of "publish queue full"
    assert run([c], lambda: not c.queued())
    c.disconnect()


def test_unsubscribe_stops_delivery():
    topic = unique("t/unsub")
    c = client()
    c.connect()
    got = collector(c)
    c.subscribe(topic, 0)
    c.subscribe(topic + "/end", 0)
    c.publish(topic, b"before", 1, wait=True)
    assert run([c], lambda: got)  # the subscription delivers,
    c.unsubscribe(topic)
    c.publish(topic, b"after", 1, wait=True)  # then nothing once unsubscribed:
    c.publish(topic + "/end", b"end", 1, wait=True)  # this one would come after it
    assert run([c], lambda: len(got) >= 2)
    assert [g[1] for g in got] == [b"before", b"end"]
    c.disconnect()


def test_publish_allocates_nothing():
    if not MICROPYTHON:
        support.skip("heap figures are MicroPython's")
    c = client()
    c.connect()
    topic = "sensors/drone01/altitude"
    payload = b"0123456789abcdef"
    for q in (0, 1):
        for _ in range(50):
            c.publish(topic, payload, q)
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        for _ in range(300):
            c.publish(topic, payload, q)
        b = gc.mem_alloc()
        gc.enable()
        assert b - a < 300, (q, b - a)  # less than one byte per publish
    c.publish(topic, payload, 1, wait=True)
    c.disconnect()


def test_tls_without_a_ca_file_verifies_or_needs_an_explicit_opt_out():
    import ssl

    from midge import tls

    host, port = support.mosquitto()  # plain MQTT: a refused TLS setup never gets to talk
    if MICROPYTHON:  # no system CA store: refused before any byte goes out
        e = raises(ValueError, tls.context, True, {})
        assert "TLS needs ssl_params['cafile']" in str(e), str(e)
        c = Client(unique("tls"), host, port, ssl=True)
        e = raises(MQTTException, c.connect)
        assert str(e).startswith("cannot connect to %s:%d: TLS needs " % (host, port)), str(e)
        assert c.sock is None and not c.connected
    else:  # the system CA store
        ctx = tls.context(True, {})
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ctx = tls.context(True, {"cert_reqs": ssl.CERT_NONE})  # the opt-out, by name
    assert ctx.verify_mode == ssl.CERT_NONE


def test_disconnect_from_a_handler_ends_loop_forever_cleanly():
    # more messages read with the one whose handler disconnects: not an error
    topic = unique("t/stop")
    pub = client()
    pub.connect()
    sub = client()
    sub.connect()
    got = []

    def stop(t, p, m):
        got.append(p)
        sub.disconnect()

    sub.subscribe(topic, 1, stop)
    for i in range(5):  # acknowledged, so on their way to sub before it reads
        pub.publish(topic, b"%d" % i, 1, wait=True)
    sub.loop_forever()
    assert got == [b"0"] and not sub.connected
    pub.disconnect()
