"""`midge monitor`: how a broker feels from a client. Connect time, publish time (until
PUBACK/PUBCOMP at QoS 1/2) and publish-to-receive latency percentiles on a private topic,
against any MQTT 3.1.1 broker."""

import json
import os
import struct
import time

from midge.client import MQTTException

from host_tools.cli import CLIError
from host_tools.pubsub import _common, connect, make_client


def add_arguments(p):
    _common(p)
    p.add_argument("-n", "--count", type=int, default=200, help="messages to time (default 200)")
    p.add_argument("--interval", type=float, default=0, help="ms between messages (default 0)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else None


def _connect(args, cid):
    c = make_client(args, cid, reconnect=False)
    t0 = time.perf_counter()
    connect(c, args)
    return c, (time.perf_counter() - t0) * 1000


def measure(args):
    if args.count < 1:
        raise CLIError("--count must be at least 1")
    topic = args.topic[0] if args.topic else "midge/monitor/%d-%d" % (os.getpid(), time.time())
    sub, t_connect = _connect(args, "midge-mon-sub-%d" % os.getpid())
    pub, _ = _connect(args, "midge-mon-pub-%d" % os.getpid())
    latency = []
    sub.set_callback(
        lambda t, p, m: latency.append((time.perf_counter() - struct.unpack("d", p[:8])[0]) * 1000)
    )
    publish = []
    try:
        sub.subscribe(topic, args.qos)
        for _ in range(args.count):
            t0 = time.perf_counter()
            pub.publish(topic, struct.pack("d", t0), args.qos, wait=True)
            publish.append((time.perf_counter() - t0) * 1000)
            sub.loop(0)
            if args.interval:
                end = time.perf_counter() + args.interval / 1000
                while time.perf_counter() < end:
                    sub.loop(int(args.interval))
        deadline = time.monotonic() + 5
        while len(latency) < args.count and time.monotonic() < deadline:
            sub.loop(100)
    except MQTTException as e:
        raise CLIError(str(e)) from None
    finally:
        pub.disconnect()
        sub.disconnect()
    fig = {"broker": "%s:%d" % (args.host, pub.port), "qos": args.qos, "connect_ms": t_connect}
    fig["sent"], fig["received"] = args.count, len(latency)
    for name, vals in (("publish_ms", publish), ("latency_ms", latency)):
        fig[name] = {q: percentile(vals, q) for q in (50, 90, 99)}
        fig[name]["max"] = max(vals) if vals else None
    return fig


def run(args):
    fig = measure(args)
    if args.json:
        print(json.dumps(fig, indent=1))
        return 0 if fig["received"] == fig["sent"] else 1
    print("broker %s, QoS %d, %d messages" % (fig["broker"], fig["qos"], fig["sent"]))
    print("connect          %8.2f ms" % fig["connect_ms"])
    for name, label in (("publish_ms", "publish"), ("latency_ms", "receive latency")):
        f = fig[name]
        if f["max"] is None:
            print("%-16s        (none)" % label)
            continue
        print(
            "%-16s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms"
            % (label, f[50], f[90], f[99], f["max"])
        )
    lost = fig["sent"] - fig["received"]
    if lost:
        print("lost             %d of %d" % (lost, fig["sent"]))
        return 1
    return 0
