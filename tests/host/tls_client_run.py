# Run by test_client_tls.py under CPython and under MicroPython: `tls_client_run.py PORT CA
# OTHER_CA`. Both drivers connect to a TLS listener verifying it against CA, pass a QoS 1
# message through it, and are refused with OTHER_CA and with no CA file (the test's CA is in
# no system store); with cert_reqs CERT_NONE, the explicit opt-out, they connect unverified.
# Prints one result line per check.
import asyncio
import ssl
import sys

from midge.aclient import AsyncClient
from midge.client import Client, MQTTException
from midge.compat import ticks_diff, ticks_ms

port, ca, other = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def blocking(params):
    c = Client("tls-b", "127.0.0.1", port, ssl=True, ssl_params=params)
    try:
        c.connect()
    except MQTTException as e:
        return "refused: %s" % e
    got = []
    c.set_callback(lambda t, p, m: got.append(p))
    c.subscribe("tls/b", 1)
    c.publish("tls/b", b"secret", 1, wait=True)
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 5000:
        c.loop(50)
    c.disconnect()
    return "got %r" % got


async def aio(params):
    c = AsyncClient("tls-a", "127.0.0.1", port, ssl=True, ssl_params=params)
    try:
        await c.connect()
    except MQTTException as e:
        return "refused: %s" % e
    got = []
    c.set_callback(lambda t, p, m: got.append(p))
    await c.subscribe("tls/a", 1)
    await c.publish("tls/a", b"secret", 1, wait=True)
    t0 = ticks_ms()
    while not got and ticks_diff(ticks_ms(), t0) < 5000:
        await asyncio.sleep(0.02)
    await c.disconnect()
    return "got %r" % got


CASES = (
    ("ok", {"cafile": ca}),
    ("other", {"cafile": other}),
    ("no cafile", {}),
    ("insecure", {"cert_reqs": ssl.CERT_NONE}),
)
for name, params in CASES:
    print("blocking %s:" % name, blocking(params))
    print("asyncio %s:" % name, asyncio.run(aio(params)))
