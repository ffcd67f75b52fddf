"""`midge pub` / `midge sub` flags against the Mosquitto the test runner started: client id
(-i), keepalive (-k), last will (--will-*), message count (-C) and topic prefix (-v).
Every `midge sub` runs in its own session and is killed by process group when done."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import support
from faultproxy import FaultProxy
from harness import process_group, read_until
from vbtools import ROOT, midge

sys.path.insert(0, os.path.join(ROOT, "lib"))
from midge import codec  # noqa: E402


@contextlib.contextmanager
def sub(*args):
    """A `midge sub` process (stdout piped as bytes), killed with its group on the way out."""
    cmd = [sys.executable, "-m", "host_tools", "sub", *[str(a) for a in args]]
    with process_group(cmd, cwd=ROOT, stderr=subprocess.PIPE) as p:
        yield p


def read_lines(p, n, secs=10):
    """Up to n lines of p's stdout, waiting at most secs (select, never a blocking read)."""
    return read_until(p, lambda t: t.count("\n") >= n, secs).splitlines()


def pub(port, topic, message, *flags):
    r = midge("pub", "-p", port, "-t", topic, "-m", message, *flags, timeout=20)
    assert r.returncode == 0, r.stderr


class Watcher:
    """paho-mqtt subscribed to one filter: messages as (topic, payload, qos, retain)."""

    def __init__(self, port, topic):
        self.got = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=support.unique("w"))
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload, m.qos, m.retain))
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(topic, 2)
        assert done.wait(5)

    def wait(self, pred, secs=10):
        end = time.monotonic() + secs
        while not pred(self.got) and time.monotonic() < end:
            time.sleep(0.02)
        return pred(self.got)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_client_id_and_session_then_count_and_verbose():
    """-i with -c names a persistent session: what is published while that `midge sub` is
    away is delivered when a new `midge sub` comes back with the same id. -C 2 exits after
    exactly two messages (of three waiting), -v prefixes each with its topic."""
    port = support.mosquitto()[1]
    cid, topic = support.unique("cid"), "pubsub/" + support.unique("t")
    r = midge("sub", "-p", port, "-i", cid, "-c", "-q", "1", "-t", topic, "-W", "0.5", timeout=20)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    pub(port, topic, "while-away-1", "-q", "1")
    pub(port, topic, "while-away-2", "-q", "1")
    pub(port, topic, "while-away-3", "-q", "1")
    args = ("-p", port, "-i", cid, "-c", "-q", "1", "-t", topic, "-C", "2", "-W", "15", "-v")
    with sub(*args) as p:
        lines = read_lines(p, 3, 15)
        assert p.wait(10) == 0, (lines, p.stderr.read())
    assert lines == [topic + " while-away-1", topic + " while-away-2"]
    # the session outlives that exit: the next message waits for the same id, and only it
    pub(port, topic, "while-away-4", "-q", "1")
    with sub("-p", port, "-i", cid + "x", "-q", "1", "-t", topic, "-W", "1") as p:
        assert p.wait(10) == 0 and read_lines(p, 1, 1) == []
    with sub("-p", port, "-i", cid, "-c", "-q", "1", "-t", topic, "-C", "1", "-W", "15") as p:
        assert read_lines(p, 1, 15) == ["while-away-4"]  # no -v: the payload alone
        assert p.wait(10) == 0


def test_keepalive_and_client_id_in_connect():
    """Through a recording proxy: the CONNECT carries -i and -k, and with -k 1 an idle
    `midge sub` pings about once a second."""
    port = support.mosquitto()[1]
    proxy = FaultProxy(port)
    cid = support.unique("ka")
    try:
        with sub("-p", proxy.port, "-i", cid, "-k", "1", "-t", "pubsub/idle", "-W", "3.5") as p:
            assert p.wait(15) == 0, p.stderr.read()
        raw = [pkt for d, t, _, pkt in proxy.seen if d == "up" and t == support.CONNECT]
        d = codec.Decoder()
        d.receive_data(bytes(raw[0]))
        connect = d.next_packet()
        assert connect.client_id == cid and connect.keepalive == 1
        assert 2 <= proxy.count("up", support.PINGREQ) <= 4
        assert proxy.count("down", support.PINGRESP) >= 2
    finally:
        proxy.close()


def test_will_arrives_when_sub_is_killed():
    """--will-topic/--will-payload/--will-qos/--will-retain: kill -9 of `midge sub` (no
    DISCONNECT) makes Mosquitto publish the will, at QoS 1 and retained."""
    port = support.mosquitto()[1]
    will, probe = "pubsub/" + support.unique("will"), "pubsub/" + support.unique("probe")
    pub(port, probe, "ready", "-r")  # retained: shows that `midge sub` has subscribed
    w = Watcher(port, will)
    try:
        args = ("-p", port, "-t", probe, "--will-topic", will, "--will-payload", "gone")
        with sub(*args, "--will-qos", "1", "--will-retain") as p:
            assert read_lines(p, 1) == ["ready"]
            assert w.got == []  # no will while it lives
            os.kill(p.pid, signal.SIGKILL)
            assert w.wait(lambda g: g), "no will"
        assert w.got == [(will, b"gone", 1, False)]  # live delivery: retain flag clear
    finally:
        w.close()
    late = Watcher(port, will)
    try:
        assert late.wait(lambda g: g), "will not retained"
        assert late.got == [(will, b"gone", 1, True)]
    finally:
        late.close()
        for t in (will, probe):
            r = midge("pub", "-p", port, "-t", t, "-n", "-r", timeout=20)
            assert r.returncode == 0, r.stderr
