"""The midge client under faults (a proxy that cuts or stalls the link at a chosen packet,
a broker restart, a misbehaving broker) and with paho-mqtt as the peer. CPython only.
Tests taking the `driver` fixture run on the blocking Client and on the AsyncClient."""

import asyncio
import socket
import threading
import time

import harness
import paho.mqtt.client as paho
import pytest
import support
from faultproxy import FaultProxy
from midge import codec
from midge.aclient import AsyncClient
from midge.client import Client, MQTTException

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK = 3, 4, 5, 6, 7, 8, 9
PINGREQ, PINGRESP = 12, 13
END = b"end"


def run(clients, done, secs=10):
    end = time.monotonic() + secs
    while not done() and time.monotonic() < end:
        for c in clients:
            c.loop(10)
    return done()


class Peer:
    """A paho-mqtt client on the broker directly, recording payloads it receives."""

    def __init__(self, port, topic=None, qos=2):
        self.got = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=support.unique("paho"))
        self.c.on_message = lambda c, u, m: self.got.append(m.payload)
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if topic:
            self.c.subscribe(topic, qos)
            assert subscribed.wait(5)

    def publish(self, topic, payload, qos):
        self.c.publish(topic, payload, qos).wait_for_publish(5)

    def until_end(self, secs=10):
        """What came before the sentinel b"end" (published after everything else by the
        same client, so a duplicate would come before it), once the sentinel is here."""
        end = time.monotonic() + secs
        while END not in self.got and time.monotonic() < end:
            time.sleep(0.01)
        assert END in self.got, self.got
        return self.got[: self.got.index(END)]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker_port():
    return support.mosquitto()[1]


@pytest.fixture
def proxy(broker_port):
    p = FaultProxy(broker_port)
    yield p
    p.close()


def midge_client(port, cls=Client, **kw):
    kw.setdefault("clean_session", False)
    kw.setdefault("backoff_min", 20)
    kw.setdefault("backoff_max", 200)
    kw.setdefault("keepalive", 5)
    return cls(support.unique("mdg"), "127.0.0.1", port, **kw)


class SyncAsync:
    """An AsyncClient driven by a synchronous test: its event loop runs while the test calls
    a method or loop(ms), so the client's own reader task does the work (reads, timers,
    reconnects) as it does in an asyncio application."""

    def __init__(self, *args, **kw):
        self.aloop = asyncio.new_event_loop()
        self.c = AsyncClient(*args, **kw)

    def __getattr__(self, name):  # state and the Session's plain methods
        return getattr(self.c, name)

    def _run(self, coro):
        return self.aloop.run_until_complete(coro)

    def connect(self, *args):
        return self._run(self.c.connect(*args))

    def publish(self, *args, **kw):
        return self._run(self.c.publish(*args, **kw))

    def subscribe(self, *args, **kw):
        return self._run(self.c.subscribe(*args, **kw))

    def loop(self, ms):
        self._run(asyncio.sleep(ms / 1000))

    def disconnect(self):
        """disconnect() (bounded: a hang fails the test), then the event loop closes."""
        if not self.aloop.is_closed():
            try:
                self._run(asyncio.wait_for(self.c.disconnect(), 5))
            finally:
                self.aloop.close()

    close = disconnect


@pytest.fixture(params=["blocking", "asyncio"])
def driver(request):
    """make(port, **kw): a midge client of the driver under test (midge_client's defaults)."""
    made = []

    def make(port, **kw):
        c = midge_client(port, Client if request.param == "blocking" else SyncAsync, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()


@pytest.mark.parametrize(
    "qos,direction,ptype,after",
    [
        (1, "up", PUBLISH, True),  # the broker has it; the link dies before PUBACK
        (1, "down", PUBACK, False),  # PUBACK lost
        (2, "up", PUBLISH, True),
        (2, "down", PUBREC, False),  # PUBREC lost
        (2, "up", PUBREL, True),  # dies right after PUBREL
        (2, "down", PUBCOMP, False),  # PUBCOMP lost
    ],
)
def test_publisher_link_cut_loses_nothing(driver, broker_port, proxy, qos, direction, ptype, after):
    topic = support.unique("f/pub")
    peer = Peer(broker_port, topic)
    c = driver(proxy.port)
    c.connect()
    proxy.cut_at(direction, ptype, nth=3, after=after)
    sent = [b"%d" % i for i in range(10)]
    for p in sent:
        c.publish(topic, p, qos)
    assert run([c], lambda: not c.queued() and c.reconnects)
    c.publish(topic, END, qos, wait=True)
    got = peer.until_end()
    peer.close()
    c.disconnect()
    assert c.reconnects == 1
    assert set(got) == set(sent)  # 0 lost
    if qos == 2:
        assert sorted(got, key=int) == sent  # 0 duplicates
    resent = proxy.count("up", PUBLISH, dup=True) + proxy.count("up", PUBREL) - (qos == 2) * 11
    assert resent >= 1  # something really was retransmitted


@pytest.mark.parametrize(
    "direction,ptype,after",
    [
        ("down", PUBLISH, True),  # delivered, link dies before PUBREC
        ("up", PUBREC, True),
        ("down", PUBREL, True),  # dies before PUBCOMP
        ("up", PUBCOMP, False),  # PUBCOMP lost
    ],
)
def test_subscriber_qos2_link_cut_delivers_exactly_once(
    driver, broker_port, proxy, direction, ptype, after
):
    topic = support.unique("f/sub")
    c = driver(proxy.port)
    got = []
    c.set_callback(lambda t, p, m: got.append(p))
    c.connect()
    c.subscribe(topic, 2)
    proxy.cut_at(direction, ptype, nth=3, after=after)
    peer = Peer(broker_port)
    sent = [b"%d" % i for i in range(10)]
    for p in sent + [END]:  # a duplicate would come before END
        peer.publish(topic, p, 2)
    assert run([c], lambda: END in got and c.reconnects)
    peer.close()
    c.disconnect()
    assert c.reconnects == 1
    assert got[-1] == END and sorted(got) == sorted(sent + [END]), got  # 0 lost, 0 duplicated


def test_subscriber_qos1_link_cut_loses_nothing(driver, broker_port, proxy):
    topic = support.unique("f/sub1")
    c = driver(proxy.port)
    got = []
    c.set_callback(lambda t, p, m: got.append(p))
    c.connect()
    c.subscribe(topic, 1)
    proxy.cut_at("down", PUBLISH, nth=4, after=True)
    peer = Peer(broker_port)
    sent = [b"%d" % i for i in range(10)]
    for p in sent:
        peer.publish(topic, p, 1)
    assert run([c], lambda: set(got) == set(sent))
    peer.close()
    c.disconnect()
    assert c.reconnects == 1


@pytest.mark.parametrize("clean", [False, True])
def test_resubscribes_only_when_the_session_is_gone(driver, broker_port, proxy, clean):
    topic = support.unique("f/resub")
    c = driver(proxy.port, clean_session=clean, keepalive=1)
    got = []
    c.set_callback(lambda t, p, m: got.append(p))
    c.connect()
    c.subscribe(topic, 1)
    proxy.cut_at("up", PINGREQ, after=False)  # the ping when idle for a keepalive
    assert run([c], lambda: c.reconnects == 1 and c.connected)
    assert c.session_present is (not clean)
    # the broker has the subscription again before the peer publishes (else a race)
    assert run([c], lambda: proxy.count("down", SUBACK) == (2 if clean else 1))
    peer = Peer(broker_port)
    peer.publish(topic, b"after", 1)
    assert run([c], lambda: got == [b"after"])
    peer.close()
    c.disconnect()
    assert proxy.count("up", SUBSCRIBE) == (2 if clean else 1)


def test_keepalive_expiry_on_a_stalled_link(driver, proxy):
    c = driver(proxy.port, keepalive=1, clean_session=True)
    c.connect()
    # The broker gets the PINGREQ (so it does not time the client out first); its
    # PINGRESP and everything after it is held back from the client.
    proxy.stall_at("down", PINGRESP)
    t0 = time.monotonic()
    assert run([c], lambda: c.reconnects == 1 and c.connected, 8)
    assert 1.4 < time.monotonic() - t0 < 8  # 1.5 keepalives, not before
    assert c.last_error.startswith("no answer from the broker"), c.last_error
    c.disconnect()


def test_keepalive_0_a_stalled_link_is_an_error(proxy):
    # No keepalive: the connect timeout bounds a write the broker does not take (a drain
    # without a limit hung every later publish() and disconnect() for ever). Without
    # reconnect, run() raises why; publish() goes on queueing (a bridge reconnects itself)
    c = midge_client(proxy.port, SyncAsync, keepalive=0, reconnect=False)
    try:
        c.connect(1000)
        proxy.stall_at("up", PUBLISH)
        t0 = time.monotonic()
        while c.connected and time.monotonic() - t0 < 10:  # (wait_for: a hang fails)
            c._run(asyncio.wait_for(c.c.publish("f/stall", b"x" * 65536), 5))
        assert time.monotonic() - t0 < 5
        with pytest.raises(MQTTException, match="nothing written for 1 s"):
            c._run(asyncio.wait_for(c.c.run(), 2))
        c._run(asyncio.wait_for(c.c.disconnect(), 2))
    finally:
        c.close()
    # disconnect() while the runner waits on such a write
    c = midge_client(proxy.port, SyncAsync, keepalive=0)
    try:
        c.connect(1000)
        proxy.stall_at("up", PUBLISH)
        c._run(asyncio.wait_for(c.c.publish("f/stall", b"x" * 4000000), 5))  # (written)
        t0 = time.monotonic()
        c._run(asyncio.wait_for(c.c.disconnect(), 3))
        assert time.monotonic() - t0 < 3
    finally:
        c.close()


def test_broker_restart(driver):
    m = harness.Mosquitto().start()
    try:
        topic = support.unique("f/restart")
        c = driver(m.port, clean_session=True, backoff_min=50, backoff_max=30000)
        got = []
        c.set_callback(lambda t, p, m: got.append(p))
        c.connect()
        c.subscribe(topic, 1)
        m.stop()
        run([c], lambda: not c.connected, 3)
        assert not c.connected
        pid = c.publish(topic, b"queued while down", 1)
        m2 = harness.Mosquitto()
        m2.port = m.port
        m = m2.start()
        assert run([c], lambda: c.connected)
        assert not c.session_present  # a fresh broker: subscribed again
        assert run([c], lambda: got == [b"queued while down"] and not c.pending(pid))
        c.disconnect()
    finally:
        m.stop()


class BadBroker:
    """A scripted broker: for each accepted connection, read CONNECT and send the bytes of
    the next script entry (then keep the connection open until the client closes it)."""

    def __init__(self, script):
        self.script = list(script)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.script:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(s)
            s.recv(1024)  # CONNECT
            s.sendall(self.script.pop(0))

    def close(self):
        self.lsock.close()
        for s in self.conns:
            s.close()


def test_bad_broker_input_is_a_clear_error_and_a_clean_reconnect():
    ok = codec.encode(codec.Connack(False, 0))
    b = BadBroker(
        [
            ok,
            ok + b"\x30\x04\x00\x09ab",  # a PUBLISH whose topic runs past the packet
            codec.encode(codec.Connack(False, 3)),
            ok + codec.encode(codec.Connect("x")),  # a packet type a broker never sends
            ok + b"\xf0\x00",  # reserved type 15
            ok,
        ]
    )
    c = Client("bad", "127.0.0.1", b.port, keepalive=5, backoff_min=10, backoff_max=40)
    c.connect()
    b.conns[0].close()
    errors = []
    end = time.monotonic() + 10
    while c.reconnects < 5 and time.monotonic() < end:
        c.loop(10)
        if c.last_error and (not errors or errors[-1] != c.last_error):
            errors.append(c.last_error)
    assert run([c], lambda: c.connected)
    b.close()
    # the codec words the reason of a malformed packet; the client says where it came from
    assert len(errors) == 5 and errors[1].startswith("malformed packet from the broker: ")
    assert errors[4].startswith("malformed packet from the broker: ")
    assert errors[0] == "broker closed the connection"
    assert errors[2] == "connection refused: server unavailable (CONNACK 3)"
    assert errors[3] == "unexpected packet type 1 from the broker"


def test_refused_subscription_raises():
    ok = codec.encode(codec.Connack(False, 0))

    class SubackBroker(BadBroker):
        def _serve(self):
            s, _ = self.lsock.accept()
            self.conns.append(s)
            s.recv(1024)
            s.sendall(ok)
            data = s.recv(1024)  # SUBSCRIBE: answer with the failure code
            s.sendall(codec.encode(codec.Suback((data[2] << 8) | data[3], [0x80])))

    b = SubackBroker([])
    c = Client("sub", "127.0.0.1", b.port)
    c.connect()
    with pytest.raises(MQTTException, match="subscription to 'a/b' refused by the broker"):
        c.subscribe("a/b", 1)
    assert c.subs == []
    b.close()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_interop_both_ways(driver, broker_port, qos):
    topic = support.unique("f/paho")
    peer = Peer(broker_port, topic + "/to-paho")
    c = driver(broker_port, clean_session=True)
    got = []
    c.set_callback(lambda t, p, m: got.append((t, p, m.qos)))
    c.connect()
    c.subscribe(topic + "/to-midge", 2)
    for i in range(5):
        c.publish(topic + "/to-paho", b"m%d" % i, qos, wait=True)
        peer.publish(topic + "/to-midge", b"p%d" % i, qos)
    c.publish(topic + "/to-paho", END, qos, wait=True)
    assert run([c], lambda: len(got) == 5)
    assert peer.until_end() == [b"m%d" % i for i in range(5)]
    assert got == [(topic + "/to-midge", b"p%d" % i, qos) for i in range(5)]
    peer.close()
    c.disconnect()
