# The asyncio client against real Mosquitto, on CPython and MicroPython.
import asyncio
import os
import socket

import support
from midge.aclient import AsyncClient, MQTTException
from midge.client import Client
from midge.compat import MICROPYTHON, ticks_diff, ticks_ms
from support import unique


def client(**kw):
    host, port = support.mosquitto(kw.pop("kind", "anon"))
    return AsyncClient(unique("a"), host, port, **kw)


async def until(done, ms=5000):
    t0 = ticks_ms()
    while not done() and ticks_diff(ticks_ms(), t0) < ms:
        await asyncio.sleep(0.01)
    return done()


def test_async_qos_levels_handlers_and_run():
    async def main():
        topic = unique("a/t")
        c = client(keepalive=10)
        assert await c.connect() is False
        runner = asyncio.create_task(c.run())
        got, other = [], []
        c.set_callback(lambda t, p, m: other.append(p))
        assert await c.subscribe(topic + "/+", 2, lambda t, p, m: got.append((t, p, m.qos))) == 2
        await c.subscribe(topic + "-other", 0)
        for q in (0, 1, 2):
            await c.publish(topic + "/x", b"m%d" % q, q, wait=True)
        pids = []
        for i in range(20):  # no await in a comprehension: MicroPython has none
            pids.append(await c.publish(topic + "/y", b"%d" % i, 1))
        await c.publish(topic + "-other", b"o", 0)
        assert await until(lambda: len(got) == 23 and other)
        assert got[:3] == [(topic + "/x", b"m%d" % q, q) for q in (0, 1, 2)]
        assert [int(g[1]) for g in got[3:]] == list(range(20))
        assert not any(c.pending(p) for p in pids)
        await c.unsubscribe(topic + "-other")  # it delivered "o" above; nothing after:
        await c.publish(topic + "-other", b"o2", 1, wait=True)
        await c.publish(topic + "/end", b"end", 1, wait=True)  # this comes after "o2" would
        assert await until(lambda: len(got) == 24)
        assert got[23][1] == b"end" and other == [b"o"], other
        await c.disconnect()
        await asyncio.wait_for(runner, 2)  # run() ends at disconnect()
        assert not c.connected

    asyncio.run(main())


def test_async_reconnect_and_errors():
    async def main():
        topic = unique("a/rc")
        c = client(keepalive=10, clean_session=False, backoff_min=50)
        await c.connect()
        got = []
        c.set_callback(lambda t, p, m: got.append(p))
        await c.subscribe(topic, 1)
        # the broker drops the link: another connection takes the client id over
        host, port = support.mosquitto()
        intruder = Client(c.client_id, host, port, clean_session=False)
        intruder.connect()
        intruder.disconnect()
        assert await until(lambda: c.reconnects == 1 and c.connected)
        assert c.session_present and c.last_error
        await c.publish(topic, b"after", 1, wait=True)
        assert await until(lambda: got == [b"after"])
        await c.disconnect()
        bad = client(kind="auth", user="drone", password="nope")
        try:
            await bad.connect()
            raise AssertionError("connected with a bad password")
        except MQTTException as e:
            assert str(e).startswith("connection refused: "), str(e)

    asyncio.run(main())


async def araises(coro):
    """The MQTTException the coroutine raised; fail if it did not raise."""
    try:
        await coro
    except MQTTException as e:
        return e
    raise AssertionError("did not raise MQTTException")


def silent_listener():
    """A listening socket on 127.0.0.1 that accepts nothing and answers nothing: (sock, port).
    MicroPython's socket has no getsockname(), so a random free port is tried (bounded)."""
    for _ in range(50):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
        s = socket.socket()
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(1)
            return s, port
        except OSError:
            s.close()
    raise AssertionError("no free port for a silent listener")


class PingCounter(AsyncClient):
    """Counts the writes that are one PINGREQ (sent() is told of every write)."""

    pings = 0

    def sent(self, now):
        if bytes(self.out[: self.nout]) == b"\xc0\x00":
            self.pings += 1
        AsyncClient.sent(self, now)


def test_async_keepalive_pings_an_idle_link():
    async def main():
        host, port = support.mosquitto()
        c = PingCounter(unique("a"), host, port, keepalive=1)
        await c.connect()
        await asyncio.sleep(2.6)
        # the reader sends one PINGREQ per idle second; its 1.5 s dead-link check proves
        # each was answered (Mosquitto 2.0 drops a silent keepalive-1 client after ~5 s)
        assert c.pings >= 2, c.pings
        assert c.connected and c.reconnects == 0 and c.last_error is None, c.last_error
        await c.disconnect()

    asyncio.run(main())


def test_async_will_retain_and_handlers():
    async def main():
        base = unique("a/will")
        watcher = client(keepalive=10)
        await watcher.connect()
        seen, other = [], []
        await watcher.subscribe(
            base + "/status", 1, lambda t, p, m: seen.append((p, m.qos, m.retain))
        )
        watcher.set_callback(lambda t, p, m: other.append((t, p)))
        await watcher.subscribe(base + "/+/x", 0)
        dying = client(keepalive=10)
        dying.set_will(base + "/status", b"offline", 1, True)
        await dying.connect()
        await dying.publish(base + "/a/x", b"hi", 0)
        dying._task.cancel()  # the application dies: no reader, no DISCONNECT,
        await dying._close()  # the socket just closes; the broker publishes the will
        assert await until(lambda: seen and other)
        assert seen == [(b"offline", 1, False)]
        assert other == [(base + "/a/x", b"hi")]
        late = client(keepalive=10)
        await late.connect()
        got = []
        late.set_callback(lambda t, p, m: got.append((t, p, m.qos, m.retain)))
        await late.subscribe(base + "/status", 0)
        assert await until(lambda: got)
        assert got == [(base + "/status", b"offline", 0, True)]
        await late.publish(base + "/status", b"", 0, retain=True)  # clear the retained will
        await late.disconnect()
        await watcher.disconnect()

    asyncio.run(main())


def test_async_offline_queue_bounds():
    async def main():
        topic = unique("a/q")
        sub = client(keepalive=10)
        await sub.connect()
        got = []
        sub.set_callback(lambda t, p, m: got.append((p, m.qos)))
        await sub.subscribe(topic, 2)
        c = client(keepalive=10, queue_count=3, queue_bytes=200)
        await c.publish(topic, b"a", 0)  # not connected yet: queued
        await c.publish(topic, b"b", 1)
        await c.publish(topic, b"c", 2)
        assert c.queued() == 3 and c.dropped == 0
        await c.publish(topic, b"d", 1)  # the queue is full: the oldest QoS 0 message goes
        assert c.queued() == 3 and c.dropped == 1
        e = await araises(c.publish(topic, b"e", 1))  # never dropped silently
        assert str(e) == "publish queue full (3 messages, %d of 200 bytes)" % (
            3 * (len(topic) + 1)
        ), str(e)
        e = await araises(c.publish(topic, b"e", 2))
        assert str(e).startswith("publish queue full"), str(e)
        await c.publish(topic, b"f", 0)  # QoS 0 with no room: dropped and counted
        assert c.queued() == 3 and c.dropped == 2
        small = client(queue_count=8, queue_bytes=len(topic) + 10)  # the bound in bytes
        await small.publish(topic, b"0123456789", 1)
        e = await araises(small.publish(topic, b"x", 1))
        assert str(e) == "publish queue full (1 messages, %d of %d bytes)" % (
            len(topic) + 10,
            len(topic) + 10,
        ), str(e)
        await c.connect()
        assert await until(lambda: len(got) == 3 and not c.queued())
        # Mosquitto passes a QoS 2 message on at PUBREL, so "d" may overtake "c"
        assert sorted(got) == [(b"b", 1), (b"c", 2), (b"d", 1)], got
        await c.disconnect()
        await sub.disconnect()

    asyncio.run(main())


def test_async_full_queue_waits_by_bytes_for_a_non_ascii_topic():
    async def main():
        topic = unique("a/température")  # 12 characters, 13 bytes in UTF-8
        tb = len(topic.encode())
        c = client(queue_bytes=2 * (tb + 1) - 1)  # one 1-byte message, and the next by str length
        await c.connect()
        await c.publish(topic, b"1", 1)  # written, not acknowledged yet
        assert await c.publish(topic, "2", 1)  # waits for PUBACK, not "publish queue full"
        assert await until(lambda: not c.queued())
        await c.disconnect()

    asyncio.run(main())


def test_async_clean_session_resubscribes_after_a_reconnect():
    async def main():
        topic = unique("a/cs")
        c = client(keepalive=10, backoff_min=50)
        assert await c.connect() is False
        got = []
        c.set_callback(lambda t, p, m: got.append(p))
        await c.subscribe(topic, 1)
        await c.publish(topic, b"before", 1, wait=True)
        assert await until(lambda: got == [b"before"])
        host, port = support.mosquitto()
        intruder = Client(c.client_id, host, port)  # takes the id over: the broker drops c
        intruder.connect()
        intruder.disconnect()  # and with clean_session the session is gone
        assert await until(lambda: c.reconnects == 1 and c.connected)
        assert not c.session_present
        assert c.last_error == "broker closed the connection", c.last_error
        # SUBSCRIBE went out again before this PUBLISH on the same link: delivered
        await c.publish(topic, b"after", 1, wait=True)
        assert await until(lambda: got == [b"before", b"after"]), got
        await c.disconnect()

    asyncio.run(main())


def test_async_errors_name_what_happened():
    async def main():
        bad = client(kind="auth", user="drone", password="wrong")
        e = await araises(bad.connect())
        # Mosquitto 2 answers a bad password with 5 (code 4 is covered in test_client_core)
        assert str(e) == "connection refused: not authorized (CONNACK 5)", str(e)
        assert not bad.connected and bad._w is None  # the refused link is closed
        good = client(kind="auth", user="drone", password=support.auth_password())
        assert await good.connect() is False and good.connected
        await good.disconnect()
        lsock, port = silent_listener()
        try:
            mute = AsyncClient(unique("a"), "127.0.0.1", port)
            t0 = ticks_ms()
            e = await araises(mute.connect(1000))
            assert str(e) == "timed out waiting for CONNACK after 1 s", str(e)
            assert 900 <= ticks_diff(ticks_ms(), t0) < 3000
            assert mute._w is None
        finally:
            lsock.close()
        host, _ = support.mosquitto()
        e = await araises(AsyncClient("x", host, 1).connect(2000))
        assert str(e).startswith("cannot connect to %s:1: " % host), str(e)

    asyncio.run(main())


def test_async_tls_without_a_ca_file_needs_an_explicit_opt_out():
    if not MICROPYTHON:
        support.skip("CPython verifies against its system CA store (test_client.py)")

    async def main():
        c = client(ssl=True)
        e = await araises(c.connect())
        assert "TLS needs ssl_params['cafile']" in str(e), str(e)
        assert c._w is None and not c.connected

    asyncio.run(main())
