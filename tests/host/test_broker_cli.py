"""`midge broker` and `midge passwd` as a user runs them, and every config key read from a
real file with a check of what it does; broker on CPython (both drivers) and MicroPython."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import support
from brokerproc import ROOT, Broker, Raw, assert_clean, available
from test_broker_peers import Paho

ALL = [r for r in ("cpython", "fast", "micropython") if available(r)]
MIDGE = os.path.join(os.path.dirname(sys.executable), "midge")


def _port_free(port):
    """Nothing listens on port any more: connecting is refused and a new listener can bind
    (SO_REUSEADDR, as every server sets: connections in TIME_WAIT do not count)."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_midge_broker_command_logs_and_stops_cleanly(sig):
    b = Broker("fast", cmd=[MIDGE, "broker"], args=["-v"])
    try:
        assert "listening on 127.0.0.1:%d (CPython" % b.port in b.first_line
        p = Paho(b.port, "cli-peer")
        b.wait_output("connected cli-peer (127.0.0.1:")  # -v: one line per connect
        p.stop()
        b.wait_output("closed cli-peer")
        out = b.stop_clean(sig)
    finally:
        b.kill(signal.SIGKILL)
    assert out.count("\n") >= 3, out
    _port_free(b.port)


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_streams_broker_stops_on_ctrl_c_with_clients_connected(runtime):
    if not available(runtime):
        pytest.skip("runtime not available")
    b = Broker(runtime)
    try:
        r = Raw(b.port)
        assert r.connect("stay").return_code == 0
        b.stop_clean(signal.SIGINT)
        assert r.recv() is None  # its client is closed too
    finally:
        b.kill(signal.SIGKILL)
    _port_free(b.port)


def _passwd(*args):
    r = subprocess.run(
        [MIDGE, "passwd", "--iterations", "1000"] + list(args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert args[-1] not in r.stdout + r.stderr  # the password is never printed
    return r


@pytest.mark.parametrize("runtime", ALL)
def test_passwd_update_and_delete_then_the_broker_decides(runtime, tmp_path):
    pw = str(tmp_path / "passwd")
    old, new, bob = ("pw-" + os.urandom(6).hex() for _ in range(3))
    _passwd("-c", "-b", pw, "alice", old)
    _passwd("-b", pw, "bob", bob)  # add a user
    _passwd("-b", pw, "alice", new)  # change a password
    _passwd("-D", pw, "bob")  # delete a user
    assert [line.split(":")[0] for line in open(pw)] == ["alice"]
    r = subprocess.run(
        [MIDGE, "passwd", "-D", pw, "bob"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "bob" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "acl").write_text("pattern readwrite users/%u/#\n")
    conf = tmp_path / "c.conf"
    conf.write_text(
        "password_file %s\nacl_file %s\nallow_anonymous false\n" % (pw, tmp_path / "acl")
    )
    b = Broker(runtime, str(conf))
    try:
        for user, password, code in [
            ("alice", new, 0),
            ("alice", old, 4),  # the old password no longer works
            ("bob", bob, 4),  # deleted
            (None, None, 5),  # anonymous
        ]:
            r = Raw(b.port)
            kw = {"username": user, "password": password.encode()} if user else {}
            assert r.connect("c-%s" % user, **kw).return_code == code, (user, code)
        r = Raw(b.port)
        assert r.connect("alice-dev", username="alice", password=new.encode()).return_code == 0
        C = r.codec
        r.send(C.Subscribe(2, [("users/alice/#", 1), ("users/bob/#", 1)]))
        assert r.recv() == C.Suback(2, [1, 0x80])  # %u is the user name
        r.send(C.Publish("users/bob/x", b"denied", 0))  # dropped by the ACL
        r.send(C.Publish("users/alice/x", b"mine", 0))
        m = r.recv()
        assert (m.topic, m.payload) == ("users/alice/x", b"mine")
        assert_clean(b.output())
    finally:
        b.kill()


def test_config_errors_name_file_and_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "lib"))
    for text, line, words in [
        ("# fine\nlistener 1883 127.0.0.1\nmax_inflight 5\n", 3, "unknown option 'max_inflight'"),
        ("retain_available maybe\n", 1, "expected true or false"),
        ("\n\nmax_queued_bytes -5\n", 3, "out of range"),
        ("listener 70000\n", 1, "not 1..65535"),
    ]:
        conf = tmp_path / "bad.conf"
        conf.write_text(text)
        r = subprocess.run(
            [MIDGE, "broker", "--config", str(conf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        out = (r.stdout + r.stderr).strip()
        assert r.returncode == 2 and "\n" not in out, out
        assert "bad.conf:%d" % line in out and words in out, out


def _sys_reaches(mon, key, want):
    """$SYS/broker/<key> counts up to want (never past it) within a few $SYS rounds."""
    end = time.monotonic() + 3.5
    while True:
        n = int(_sys(mon, key, max(0.01, end - time.monotonic())))
        assert n <= want, (key, n, want)
        if n == want:
            return


def _bye(b, r, cid):
    """DISCONNECT and close r, then wait until the broker has let it go."""
    port = r.sock.getsockname()[1]
    r.send(r.codec.DISCONNECT_PKT)
    r.close()
    b.wait_output("closed %s (127.0.0.1:%d)" % (cid, port))


def _sys(mon, key, timeout=3.0):
    """The next $SYS/broker/<key> value mon receives."""
    end = time.monotonic() + timeout
    while True:
        m = mon.get(timeout=max(0.01, end - time.monotonic()))
        if m.topic == "$SYS/broker/" + key:
            return m.payload.decode()


@pytest.mark.parametrize("runtime", ALL)
def test_every_config_key_from_a_file(runtime, tmp_path):
    from harness import free_port

    p1, p2 = free_port(), free_port()
    conf = tmp_path / "all.conf"
    conf.write_text(
        "# every key midge reads, each checked below\n"
        "listener %d 127.0.0.1\n"
        "listener %d 0.0.0.0\n"  # off loopback: only allowed by the next line
        "allow_anonymous true\n"
        "max_connections 4\n"
        "max_inflight_messages 2\n"
        "max_queued_messages 3\n"
        "max_queued_bytes 1000\n"
        "max_packet_size 600\n"
        "retain_available false\n"
        "sys_interval 1\n" % (p1, p2)
    )
    b = Broker(runtime, str(conf), port=0, args=["-v"])
    try:
        assert "127.0.0.1:%d, 0.0.0.0:%d" % (p1, p2) in b.first_line
        from harness import wait_port

        wait_port(p1, 10, b.proc)
        wait_port(p2, 10, b.proc)
        # listener x2 + allow_anonymous true: anonymous clients on both listeners
        mon = Paho(p1, "mon")
        assert mon.connack == (False, 0)
        mon.sub("$SYS/broker/messages/dropped")
        mon.sub("$SYS/broker/uptime")
        slow = Raw(p2)
        assert slow.connect("slow", clean_session=False).return_code == 0
        C = slow.codec
        slow.send(C.Subscribe(1, [("lim/#", 1)]))
        assert slow.recv() == C.Suback(1, [1])
        pub = Raw(p1)
        assert pub.connect("pub").return_code == 0
        # max_connections 4 (mon, slow, pub and this one): the fifth is turned away
        fourth = Raw(p1)
        assert fourth.connect("fourth").return_code == 0
        fifth = Raw(p1)
        with pytest.raises((ConnectionError, TimeoutError, AssertionError)):
            assert fifth.connect("fifth") is not None
        b.wait_output("max_connections (4) reached")
        _bye(b, fourth, "fourth")
        # max_inflight_messages 2: slow gets 2 and no more until it acks
        for i in range(10):
            pub.send(C.Publish("lim/a", b"%d" % i, 1, pid=i + 1))
            assert pub.recv() == C.Ack(support.PUBACK, i + 1)
        got = [slow.recv(), slow.recv()]
        assert [p.payload for p in got] == [b"0", b"1"]
        with pytest.raises(TimeoutError):
            slow.recv(timeout=0.3)
        slow.send(C.Ack(support.PUBACK, got[0].pid))
        assert slow.recv().payload == b"2"  # from the queue
        # max_queued_messages 3: 2 in flight + 3 queued kept, the other 5 dropped and counted
        _sys_reaches(mon, "messages/dropped", 5)
        _bye(b, slow, "slow")
        # max_queued_bytes 1000: an offline persistent session keeps 2 x 400 B of 4
        qb = Raw(p1)
        assert qb.connect("qbytes", clean_session=False).return_code == 0
        qb.send(C.Subscribe(1, [("qb/#", 1)]))
        assert qb.recv() == C.Suback(1, [1])
        _bye(b, qb, "qbytes")
        for i in range(4):
            pub.send(C.Publish("qb/x", bytes([65 + i]) * 400, 1, pid=20 + i))
            assert pub.recv() == C.Ack(support.PUBACK, 20 + i)
        qb = Raw(p1)
        assert qb.connect("qbytes", clean_session=False).session_present
        for want in (b"A" * 400, b"B" * 400):
            m = qb.recv()
            assert m.payload == want
            qb.send(C.Ack(support.PUBACK, m.pid))
        with pytest.raises(TimeoutError):
            qb.recv(timeout=0.3)
        _sys_reaches(mon, "messages/dropped", 7)
        _bye(b, qb, "qbytes")
        # max_packet_size 600: a 700 B PUBLISH closes that client, says why
        big = Raw(p1)
        assert big.connect("big").return_code == 0
        bport = big.sock.getsockname()[1]
        big.send(C.Publish("lim/big", b"x" * 700, 0))
        assert big.recv() is None
        b.wait_output("(127.0.0.1:%d): protocol error" % bport)
        # retain_available false: a retained message is delivered live but not kept
        pub.send(C.Publish("ret/x", b"live", 0, retain=True))
        late = Raw(p1)
        assert late.connect("late").return_code == 0
        late.send(C.Subscribe(1, [("ret/#", 0)]))
        assert late.recv() == C.Suback(1, [0])
        with pytest.raises(TimeoutError):
            late.recv(timeout=0.3)
        # sys_interval 1: $SYS uptime comes again about a second later, larger
        u1 = int(_sys(mon, "uptime").split()[0])
        u2 = int(_sys(mon, "uptime").split()[0])
        assert u2 > u1
        mon.stop()
        assert_clean(b.output())
    finally:
        b.kill()
