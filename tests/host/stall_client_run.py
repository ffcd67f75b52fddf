# Run by tests/host/test_client_stall.py on MicroPython or CPython: an AsyncClient
# (keepalive 1) publishes 16 KB QoS 0 messages as fast as it can for DURATION ms while the
# test stops and resumes the broker. Prints "ready", then "p <ms since ready> <published>"
# every 100 ms, then "done <published> <longest publish ms> <reconnects> <connected>".
import asyncio
import sys

from midge.aclient import AsyncClient
from midge.compat import ticks_diff, ticks_ms

DURATION = 6000


async def main(port):
    c = AsyncClient("stall", "127.0.0.1", port, keepalive=1, backoff_min=100, backoff_max=400)
    await c.connect()
    runner = asyncio.create_task(c.run())
    st = [0, 0, ticks_ms()]  # published, longest publish (ms), when the current one began

    async def publisher():
        pay = b"x" * 16000
        while True:
            st[2] = ticks_ms()
            await c.publish("stall/t", pay, 0)
            st[1] = max(st[1], ticks_diff(ticks_ms(), st[2]))
            st[0] += 1  # (offline, dropped: publish() still lets the other tasks run)

    pub = asyncio.create_task(publisher())
    t0 = ticks_ms()
    print("ready")
    while ticks_diff(ticks_ms(), t0) < DURATION:
        await asyncio.sleep(0.1)
        print("p %d %d" % (ticks_diff(ticks_ms(), t0), st[0]))
    longest = max(st[1], ticks_diff(ticks_ms(), st[2]))  # counting one still pending
    pub.cancel()
    connected = c.connected
    try:
        await asyncio.wait_for(c.disconnect(), 3)
        await asyncio.wait_for(runner, 3)
    except Exception as e:
        print("disconnect: %r" % e)
    print("done %d %d %d %d" % (st[0], longest, c.reconnects, connected))


asyncio.run(main(int(sys.argv[1])))
