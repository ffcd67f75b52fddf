# One client bench run (MicroPython or CPython): `bench_client_run.py KIND PORT N QOS1_N`
# with KIND midge or umqtt (umqtt.simple). Prints READY when subscribed for the receive
# rate (the host then sends N messages), then one JSON line of figures.
# `bench_client_run.py rom PORT IMAGE` (MicroPython): the heap figures only, with the
# library run in place from a ROMFS image (as from a board's flash), then the JSON line.
import gc
import json
import sys

if sys.argv[1] == "rom":
    import vfs  # type: ignore[import-not-found]

    # the image is read into the heap before the baseline: on a board it stays in flash
    vfs.mount(vfs.VfsRom(open(sys.argv[3], "rb").read()), "/rom")  # type: ignore[attr-defined]
    sys.path.insert(0, "/rom")

kind, port = sys.argv[1], int(sys.argv[2])
TOPIC = "sensors/drone01/altitude"
PAYLOAD = b"0123456789abcdef"
res = {"kind": kind}
got = [0]


def count(t, p, m=None):  # fixed arity: a *args tuple would be the callback's allocation
    got[0] += 1


def heap():  # gc directly: the baseline comes before anything of midge is imported
    gc.collect()
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None  # None on CPython


base = heap()
from midge.compat import ticks_diff, ticks_ms  # noqa: E402

if kind == "umqtt":
    base = heap()  # the bench's clock comes from midge.compat: not umqtt's, counted out

if kind == "rom":
    from midge.client import Client

    res["heap_import"] = heap() - base
    c = Client("bench-rom", "127.0.0.1", port, keepalive=60)
    c.connect()
    res["heap_connect"] = heap() - base
    c.disconnect()
    print(json.dumps(res))
    sys.exit()
n, n1 = int(sys.argv[3]), int(sys.argv[4])
if kind == "midge":
    from midge.client import Client

    res["heap_import"] = heap() - base if base is not None else None
    c = Client("bench-" + kind, "127.0.0.1", port, keepalive=60)
    c.set_callback(count)
    c.connect()

    def pub0():
        c.publish(TOPIC, PAYLOAD)

    def pub1():
        c.publish(TOPIC, PAYLOAD, 1)

    def drain():
        c.loop(0)  # what publish() left in the output goes now
        while c.queued():
            c.loop(100)

    def sub(t):
        c.subscribe(t, 0)

    def wait():
        c.loop(1000)

else:
    from umqtt.simple import MQTTClient

    res["heap_import"] = heap() - base if base is not None else None
    c = MQTTClient("bench-" + kind, "127.0.0.1", port, keepalive=60)
    c.set_callback(count)
    c.connect()

    def pub0():
        c.publish(TOPIC, PAYLOAD)

    def pub1():
        c.publish(TOPIC, PAYLOAD, qos=1)

    def drain():
        pass

    def sub(t):
        c.subscribe(t, 0)

    def wait():
        c.wait_msg()


res["heap_connect"] = heap() - base if base is not None else None


def alloc_per(fn, k):
    if base is None:
        return None
    fn()
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(k):
        fn()
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) / k


res["alloc_pub0"] = alloc_per(pub0, 500)


def pub1_acked():
    pub1()
    drain()


res["alloc_pub1"] = alloc_per(pub1_acked, min(n1, 200))
sub("bench/self")


def echo():
    c.publish("bench/self", PAYLOAD)
    want = got[0] + 1
    while got[0] < want:
        wait()


def pub_only():
    c.publish("bench/nobody", PAYLOAD)


res["alloc_recv"] = alloc_per(echo, 200) - alloc_per(pub_only, 200) if base is not None else None


def rate(fn, k):
    t0 = ticks_ms()
    for _ in range(k):
        fn()
    drain()
    return k * 1000 / max(1, ticks_diff(ticks_ms(), t0))


res["rate_pub0"] = rate(pub0, n)
res["rate_pub1"] = rate(pub1, n1)
got[0] = 0
sub("bench/rx")
print("READY")
t0 = None
while got[0] < n:
    wait()
    if t0 is None and got[0]:
        t0 = ticks_ms()
        first = got[0]
res["rate_recv"] = (n - first) * 1000 / max(1, ticks_diff(ticks_ms(), t0))
c.disconnect()
print(json.dumps(res))
