# The asyncio client against real Mosquitto, on CPython and MicroPython.
import asyncio

import support
from midge.aclient import AsyncClient, MQTTException
from midge.client import Client
from midge.compat import ticks_diff, ticks_ms
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
        await c.unsubscribe(topic + "-other")
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
