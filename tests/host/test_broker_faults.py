"""midge's broker when links fail or clients misbehave, as a real process on CPython (both
drivers) and MicroPython: QoS 2 retries across a reconnect, the will after a reset socket,
$SYS counters, and a subscriber that stops reading."""

import socket
import struct
import time

import pytest
import support
from brokerproc import Broker, Raw, assert_clean, available
from test_broker_peers import Paho

RUNTIMES = [r for r in ("cpython", "fast", "micropython") if available(r)]


@pytest.fixture(params=RUNTIMES)
def broker(request, tmp_path):
    conf = tmp_path / "midge.conf"
    conf.write_text("sys_interval 1\n")
    b = Broker(request.param, str(conf), args=["-v"])
    yield b
    assert_clean(b.kill())


def test_qos2_publish_and_pubrel_resent_after_reconnect(broker):
    r = Raw(broker.port)
    C = r.codec
    assert r.connect("q2-sub", clean_session=False).return_code == 0
    r.send(C.Subscribe(1, [("q2r/#", 2)]))
    assert r.recv() == C.Suback(1, [2])
    p = Paho(broker.port)
    p.c.publish("q2r/a", b"first", 2).wait_for_publish(5)
    p.c.publish("q2r/b", b"second", 2).wait_for_publish(5)
    m1, m2 = r.recv(), r.recv()
    assert (m1.payload, m1.qos, m2.payload) == (b"first", 2, b"second")
    r.send(C.Ack(support.PUBREC, m1.pid))  # first: PUBREC'd; second: not even that
    assert r.recv() == C.Ack(support.PUBREL, m1.pid)
    r.close()  # the link drops before PUBCOMP
    r = Raw(broker.port)
    assert r.connect("q2-sub", clean_session=False).session_present
    got = [r.recv(), r.recv()]
    # [MQTT-4.4.0-1]: unacknowledged PUBLISH resent with DUP, and the PUBREL resent
    assert C.Ack(support.PUBREL, m1.pid) in got
    again = [x for x in got if x.type == support.PUBLISH]
    assert len(again) == 1 and again[0].pid == m2.pid and again[0].dup
    assert again[0].payload == b"second"
    r.send(C.Ack(support.PUBCOMP, m1.pid))
    r.send(C.Ack(support.PUBREC, m2.pid))
    assert r.recv() == C.Ack(support.PUBREL, m2.pid)
    r.send(C.Ack(support.PUBCOMP, m2.pid))
    with pytest.raises(TimeoutError):  # both done: nothing is sent a third time
        r.recv(timeout=0.3)
    r.send(C.DISCONNECT_PKT)
    r.close()
    p.stop()
    r = Raw(broker.port)
    assert r.connect("q2-sub", clean_session=False).session_present
    with pytest.raises(TimeoutError):
        r.recv(timeout=0.3)


def test_will_published_when_the_socket_is_reset(broker):
    w = Paho(broker.port)
    w.sub("rst/#")
    r = Raw(broker.port)
    assert r.connect("resetter", will_topic="rst/gone", will_payload=b"reset").return_code == 0
    r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.sock.close()  # RST, no DISCONNECT
    m = w.get(timeout=5)
    assert (m.topic, m.payload) == ("rst/gone", b"reset")
    w.stop()


def _round(mon, keys, timeout=3.0):
    """The next complete $SYS round mon receives: {key: value str}."""
    got = {}
    end = time.monotonic() + timeout
    while True:
        m = mon.get(timeout=max(0.01, end - time.monotonic()))
        k = m.topic[len("$SYS/broker/") :]
        if k == keys[0]:
            got = {}  # a round starts (values come in the broker's fixed order)
        got[k] = m.payload.decode()
        if len(got) == len(keys) and not m.retain:
            return got


def test_sys_counts_received_sent_retained_and_uptime(broker):
    keys = ["uptime", "messages/received", "messages/sent", "retained messages/count"]
    mon = Paho(broker.port)
    for k in keys:
        mon.sub("$SYS/broker/" + k)
    sub = Paho(broker.port)
    sub.sub("cnt/#")
    pub = Paho(broker.port)
    before = _round(mon, keys)
    if before["retained messages/count"] == "0":  # the first round: $SYS itself not yet kept
        before = _round(mon, keys)
    for i in range(5):
        pub.c.publish("cnt/%d" % i, b"x", 1).wait_for_publish(5)
    pub.c.publish("cnt/keep1", b"r", 1, retain=True).wait_for_publish(5)
    pub.c.publish("cnt/keep2", b"r", 1, retain=True).wait_for_publish(5)
    for _ in range(7):
        sub.get()
    after = _round(mon, keys)
    rx = int(after["messages/received"]) - int(before["messages/received"])
    tx = int(after["messages/sent"]) - int(before["messages/sent"])
    assert rx == 7, (before, after)
    # 7 to sub, and mon's own $SYS deliveries (4 a round) since `before` was taken
    assert tx >= 7 and (tx - 7) % 4 == 0, (before, after)
    assert int(after["retained messages/count"]) - int(before["retained messages/count"]) == 2
    assert int(after["uptime"].split()[0]) > int(before["uptime"].split()[0])
    pub.c.publish("cnt/keep1", b"", 1, retain=True).wait_for_publish(5)  # cleared
    sub.get()
    later = _round(mon, keys)
    assert int(later["retained messages/count"]) - int(after["retained messages/count"]) == -1
    for c in (mon, sub, pub):
        c.stop()


def test_slow_reader_does_not_stall_others_and_its_drops_are_counted(broker):
    slow = Raw(broker.port)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    C = slow.codec
    assert slow.connect("slow").return_code == 0
    slow.send(C.Subscribe(1, [("flood/#", 0)]))
    assert slow.recv() == C.Suback(1, [0])
    # slow never reads again
    pub = Raw(broker.port)
    assert pub.connect("flooder").return_code == 0
    ok = Raw(broker.port)
    assert ok.connect("ok").return_code == 0
    ok.send(C.Subscribe(1, [("ok/#", 1)]))
    assert ok.recv() == C.Suback(1, [1])
    worst = 0.0
    payload = b"f" * 4000
    for i in range(2000):  # 8 MB at a reader that takes none of it
        pub.send(C.Publish("flood/x", payload, 0))
        if i % 200 == 199:
            t = time.monotonic()
            ok.send(C.Publish("ok/ping", b"%d" % i, 1, pid=1))
            got = [ok.recv(), ok.recv()]
            kinds = sorted(p.type for p in got)
            assert kinds == [support.PUBLISH, support.PUBACK], got
            for p in got:
                if p.type == support.PUBLISH:
                    ok.send(C.Ack(support.PUBACK, p.pid))
            worst = max(worst, time.monotonic() - t)
    assert worst < 2.0, worst  # the other clients' round trips go on
    mon = Paho(broker.port)
    mon.sub("$SYS/broker/messages/dropped")
    end = time.monotonic() + 3
    dropped = 0
    while dropped == 0 and time.monotonic() < end:
        dropped = int(mon.get(timeout=3).payload)
    assert dropped > 0  # the slow reader's backlog is bounded: the rest dropped, counted
    assert broker.proc.poll() is None
    mon.stop()


def _tcp_state(local_port, remote_port):
    """The kernel's state of the loopback TCP socket local_port -> remote_port (Linux
    /proc/net/tcp: 01 established, 04 FIN_WAIT1 ...), or None when there is none."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            lp = int(fields[1].split(":")[1], 16)
            rp = int(fields[2].split(":")[1], 16)
            if (lp, rp) == (local_port, remote_port):
                return fields[3]
    return None


def test_closed_client_that_reads_nothing_is_let_go(broker):
    # keepalive 1 s, a full receive window, then silence: the broker closes it on keepalive
    # expiry and must then drop its side within seconds, not keep the connection (and its
    # objects and tasks) until TCP gives up on a peer that never reads.
    dead = Raw(broker.port)
    dead.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    C = dead.codec
    assert dead.connect("dead", keepalive=1).return_code == 0
    dead.send(C.Subscribe(1, [("fill/#", 0)]))
    assert dead.recv() == C.Suback(1, [0])
    me = dead.sock.getsockname()[1]
    pub = Raw(broker.port)
    assert pub.connect("filler").return_code == 0
    for _ in range(2000):  # 8 MB: past the kernel's buffers, the broker holds a backlog
        pub.send(C.Publish("fill/x", b"f" * 4000, 0))
    pub.send(b"\xc0\x00")  # PINGREQ
    assert pub.recv() == C.PINGRESP_PKT  # the flood is all routed
    assert _tcp_state(broker.port, me) == "01"
    end = time.monotonic() + 10  # 1.5 s keepalive, then at most ~3 s of grace
    while _tcp_state(broker.port, me) == "01" and time.monotonic() < end:
        pub.send(b"\xc0\x00")  # the other client stays alive meanwhile
        assert pub.recv() == C.PINGRESP_PKT
        time.sleep(0.5)
    assert _tcp_state(broker.port, me) != "01", "broker still holds the dead client"
    assert broker.proc.poll() is None
    dead.sock.close()
    pub.close()
