"""midge's own client (midge.client.Client) as a peer of midge's broker, with the broker
running on CPython (Protocol and streams drivers) and on MicroPython; paho-mqtt on the other
side where a second, independent implementation makes the test stronger."""

import sys
import time

import pytest
from brokerproc import LIB, Broker, available
from test_broker_peers import Paho

sys.path.insert(0, LIB)
from midge.client import Client  # noqa: E402

RUNTIMES = [r for r in ("fast", "cpython", "micropython") if available(r)]


@pytest.fixture(scope="module", params=RUNTIMES)
def broker(request, tmp_path_factory):
    conf = tmp_path_factory.mktemp("conf") / "midge.conf"
    conf.write_text("sys_interval 0\n")
    b = Broker(request.param, str(conf))
    yield b
    b.kill()


def _client(broker, cid, **kw):
    c = Client(cid, "127.0.0.1", broker.port, reconnect=False, **kw)
    got = []
    c.set_callback(lambda t, p, m: got.append((t, bytes(p), m.qos, m.retain)))
    return c, got


def _loop_until(clients, cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        for c in clients:
            c.loop(20)


def test_midge_client_to_midge_client_qos_0_1_2(broker):
    sub, got = _client(broker, "mc-sub")
    assert sub.connect() is False
    assert sub.subscribe("mc/#", 1) == 1
    pub, _ = _client(broker, "mc-pub")
    pub.connect()
    for q in (0, 1, 2):
        pub.publish("mc/%d" % q, b"payload %d" % q, q, wait=True)
    _loop_until([sub], lambda: len(got) == 3)
    assert sorted(got) == [
        ("mc/0", b"payload 0", 0, False),
        ("mc/1", b"payload 1", 1, False),
        ("mc/2", b"payload 2", 1, False),  # downgraded to the granted QoS 1
    ]
    pub.disconnect()
    sub.disconnect()


def test_midge_client_and_paho_both_ways_with_retain(broker):
    p = Paho(broker.port)
    p.c.publish("mr/state", b"on", 1, retain=True).wait_for_publish(5)
    c, got = _client(broker, "mr-midge")
    c.connect()
    c.subscribe("mr/+", 2)
    _loop_until([c], lambda: got)
    assert got == [("mr/state", b"on", 1, True)]  # retained: retain=1 on subscribe
    p.sub("mb/back", 2)
    c.publish("mb/back", b"x" * 3000, 2, wait=True)  # bigger than the client's buffer
    m = p.get()
    assert (m.topic, m.payload, m.qos) == ("mb/back", b"x" * 3000, 2)
    p.c.publish("mr/state", b"off", 0).wait_for_publish(5)
    _loop_until([c], lambda: len(got) == 2)
    assert got[1] == ("mr/state", b"off", 0, False)  # live: retain=0
    p.c.publish("mr/state", b"", 0, retain=True).wait_for_publish(5)  # clear it
    c.disconnect()
    p.stop()


def test_midge_client_persistent_session_gets_what_was_queued(broker):
    c, got = _client(broker, "mq-persist", clean_session=False)
    c.connect()
    c.subscribe("mq/t", 1)
    c.disconnect()
    p = Paho(broker.port)
    for i in range(3):
        p.c.publish("mq/t", b"%d" % i, 1).wait_for_publish(5)
    p.stop()
    c2, got2 = _client(broker, "mq-persist", clean_session=False)
    assert c2.connect() is True  # session present
    _loop_until([c2], lambda: len(got2) == 3)
    assert [m[1] for m in got2] == [b"0", b"1", b"2"]
    c2.disconnect()
    c3, _ = _client(broker, "mq-persist", clean_session=True)  # and drop the session
    assert c3.connect() is False
    c3.disconnect()


def test_midge_client_will_after_keepalive_expiry(broker):
    w = Paho(broker.port)
    w.sub("mw/#")
    c, _ = _client(broker, "mw-silent", keepalive=1)
    c.set_will("mw/gone", b"silent too long", 1)
    c.connect()
    m = w.get(timeout=5)  # c never loops again: no PINGREQ, the broker gives up at 1.5 s
    assert (m.topic, m.payload) == ("mw/gone", b"silent too long")
    w.stop()
