"""midge's broker bridged to a real Mosquitto (the remote): paho-mqtt and the mosquitto tools on
each side; `midge broker` on CPython and the asyncio streams driver on MicroPython."""

import os
import queue
import resource
import signal
import subprocess
import sys
import time

import harness
import pytest
import test_client_tls
from brokerproc import LIB, ROOT, Broker, assert_clean, available
from brokerproc import RUNTIMES as RUNTIMES_CMD
from faultproxy import FaultProxy
from test_broker_peers import Paho

sys.path.insert(0, LIB)
from midge import brokerconf  # noqa: E402

MIDGE = os.path.join(os.path.dirname(sys.executable), "midge")
RUNTIMES = ["midge"] + [r for r in ("micropython",) if available(r)]

pytestmark = pytest.mark.skipif(harness.mosquitto_path() is None, reason="no mosquitto")


def _broker(runtime, conf):
    """`midge broker` (runtime "midge") or the broker on MicroPython, with this config."""
    if runtime == "midge":
        return Broker("fast", str(conf), cmd=[MIDGE, "broker"])
    return Broker(runtime, str(conf))


def _bridged(runtime, tmp_path, remote, body):
    """midge broker with one bridge `edge` to remote (a harness.Mosquitto); returns once the
    bridge is connected."""
    conf = tmp_path / "bridge.conf"
    conf.write_text(
        "connection edge\naddress 127.0.0.1:%d\nrestart_timeout 1\n%s\n" % (remote.port, body)
    )
    b = _broker(runtime, conf)
    try:
        b.wait_output("bridge edge: connected to 127.0.0.1:%d" % remote.port, timeout=10)
    except BaseException:
        b.kill()
        raise
    return b


@pytest.fixture
def remote():
    m = harness.Mosquitto().start()
    yield m
    m.stop()


def _topics(p, n, wait=5):
    return sorted((m.topic, m.payload, m.qos, m.retain) for m in (p.get(wait) for _ in range(n)))


def _sub(port, filt, qos=1, **kw):
    """A paho client on port subscribed to filt."""
    p = Paho(port, **kw)
    p.sub(filt, qos)
    return p


def _some(p, n, wait=3):
    """What p gets of n messages within wait s (sorted as by _topics): for a list to compare."""
    got = []
    end = time.monotonic() + wait
    try:
        while len(got) < n:
            got.append(p.get(max(0, end - time.monotonic())))
    except queue.Empty:
        pass
    return sorted((m.topic, m.payload, m.qos, m.retain) for m in got)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_out_and_in_with_prefixes(runtime, tmp_path, remote):
    # a retained message on the remote before the bridge subscribes comes in retained
    pub = ["mosquitto_pub", "-p", str(remote.port), "-t", "central/cmd/init", "-m", "hi"]
    subprocess.run(pub + ["-r", "-q", "1"], check=True, timeout=5)
    b = _bridged(
        runtime,
        tmp_path,
        remote,
        'topic sensors/# out 1 site/ central/\ntopic cmd/# in 1 "" central/\n'
        'topic "" out 0 local/one remote/single\n',
    )
    try:
        rs = Paho(remote.port)
        rs.sub("central/sensors/#", 2)
        rs.sub("remote/#", 2)
        ls = Paho(b.port)
        ls.sub("cmd/#", 2)
        assert ls.get().topic == "cmd/init"  # live or retained: the bridge may be later
        late = Paho(b.port)  # now it is in the local retained store
        late.sub("cmd/#", 2)
        assert _topics(late, 1) == [("cmd/init", b"hi", 1, True)]
        late.stop()
        lp = Paho(b.port)
        for q in (0, 1, 2):  # out at min(published, the topic's QoS 1)
            lp.c.publish("site/sensors/t%d" % q, b"%d" % q, q).wait_for_publish(5)
        lp.c.publish("local/one", b"x", 1).wait_for_publish(5)
        lp.c.publish("site/other", b"not bridged", 1).wait_for_publish(5)
        got = _topics(rs, 4)
        assert got == [
            ("central/sensors/t0", b"0", 0, False),
            ("central/sensors/t1", b"1", 1, False),
            ("central/sensors/t2", b"2", 1, False),
            ("remote/single", b"x", 0, False),
        ], got
        rp = Paho(remote.port)
        rp.c.publish("central/cmd/go", b"now", 2).wait_for_publish(5)
        rp.c.publish("cmd/go", b"no prefix: not bridged", 1).wait_for_publish(5)
        assert _topics(ls, 1) == [("cmd/go", b"now", 1, False)]  # min(granted 1, 2)
        assert ls.none() and rs.none(0.1)
        # notifications on the remote: 1 (retained), then 0 from the bridge's will
        rn = Paho(remote.port)
        rn.sub("$SYS/broker/connection/edge/state", 1)
        assert rn.get().payload == b"1"
        assert_clean(b.kill(signal.SIGKILL))
        assert rn.get().payload == b"0"
        for p in (rs, ls, lp, rp, rn):
            p.stop()
    finally:
        assert_clean(b.kill())


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("private", [True, False])
def test_both_echo_and_live_retained(runtime, private, tmp_path, remote):
    # try_private true (the default): Mosquitto treats the bridge as a bridge (no echo of its
    # own messages, retain flag as published); false: a plain MQTT 3.1.1 client
    body = "topic # both 1 L/ R/\nnotification_topic bridges/edge\nnotifications_local_only true\n"
    if not private:
        body += "try_private false\n"
    b = _bridged(runtime, tmp_path, remote, body)
    try:
        rn = Paho(remote.port)
        rn.sub("#", 1)
        assert rn.none()  # notifications_local_only: nothing on the remote
        ln = Paho(b.port)
        ln.sub("bridges/edge", 1)
        assert _topics(ln, 1) == [("bridges/edge", b"1", 1, True)]
        rs = Paho(remote.port)
        rs.sub("R/#", 1)
        ls = Paho(b.port)
        ls.sub("L/#", 1)
        lp = Paho(b.port)
        lp.c.publish("L/up", b"u", 1).wait_for_publish(5)
        assert _topics(rs, 1) == [("R/up", b"u", 1, False)]
        # a plain client gets R/up back from Mosquitto (3.1.1 has no no-local): the bridge
        # brings it in once (local subscribers get it twice) and never sends it out again
        assert _topics(ls, 1 if private else 2) == [("L/up", b"u", 1, False)] * (2 - private)
        assert ls.none(0.5) and rs.none(0.1)
        rp = Paho(remote.port)
        rp.c.publish("R/down", b"d", 1).wait_for_publish(5)
        assert _topics(ls, 1) == [("L/down", b"d", 1, False)]
        assert _topics(rs, 1) == [("R/down", b"d", 1, False)]  # the publisher's own copy
        assert rs.none(0.5)  # not sent back out by the bridge
        # retained on the remote after the bridge subscribed: kept locally only as a bridge
        rp.c.publish("R/kept", b"k", 1, retain=True).wait_for_publish(5)
        assert _topics(ls, 1) == [("L/kept", b"k", 1, False)]  # live: retain 0 (3.1.1)
        late = Paho(b.port)
        late.sub("L/kept", 1)
        if private:
            assert _topics(late, 1) == [("L/kept", b"k", 1, True)]
        assert late.none(0.3 if private else 1)
        for p in (rs, ls, lp, rp, rn, ln, late):
            p.stop()
        b.stop_clean()  # Ctrl-C with the bridge up: "stopped", nothing else
    finally:
        assert_clean(b.kill())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_midge_as_the_remote_takes_a_bridge(runtime, tmp_path):
    # midge's own broker as the remote takes level 0x84 as Mosquitto does: what the bridge
    # publishes on a `both` topic is not sent back to it, and a retained message comes in retained
    far = Broker("fast", cmd=[MIDGE, "broker"])
    try:
        b = _bridged(runtime, tmp_path, far, "topic # both 1 L/ R/\n")
        try:
            rs = _sub(far.port, "R/#")
            ls = _sub(b.port, "L/#")
            Paho(b.port).c.publish("L/up", b"x", 1).wait_for_publish(5)
            assert _topics(rs, 1) == [("R/up", b"x", 1, False)]
            assert _topics(ls, 1) == [("L/up", b"x", 1, False)]
            assert ls.none(0.5)  # once: no echo from the remote
            rp = Paho(far.port)
            rp.c.publish("R/kept", b"k", 1, retain=True).wait_for_publish(5)
            assert _topics(ls, 1) == [("L/kept", b"k", 1, False)]
            late = Paho(b.port)
            late.sub("L/kept", 1)
            assert _topics(late, 1) == [("L/kept", b"k", 1, True)]
            for p in (rs, ls, rp, late):
                p.stop()
            out = b.kill()
            assert_clean(out)
            assert "try_private refused" not in out, out
        finally:
            b.kill()
    finally:
        far.kill()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_qos1_and_notifications_across_a_remote_restart(runtime, tmp_path):
    # QoS 1 messages wait in the client's queue and then in the bridge's, each bounded by
    # max_queued_messages (5 here): 10 of the 20 published while the remote is away survive
    m = harness.Mosquitto()
    m.extra = "persistence true\npersistence_location %s/" % m.dir  # sessions survive a restart
    m.start()
    b = None
    try:
        rs = Paho(m.port, "central-sub", clean=False)
        rs.sub("c/#", 1)
        b = _bridged(
            runtime,
            tmp_path,
            m,
            'topic q/# out 1 "" c/\ntopic cmd/# in 1\nmax_queued_messages 5\nsys_interval 1\n',
        )
        state = "$SYS/broker/connection/edge/state"
        st = Paho(b.port)
        st.sub(state, 1)
        assert _topics(st, 1) == [(state, b"1", 1, True)]
        lp = Paho(b.port)
        ls = Paho(b.port)
        ls.sub("cmd/#", 1)
        rs.stop()
        m.proc.terminate()  # the remote goes away ...
        m.proc.wait(5)
        assert st.get().payload == b"0"
        for i in range(20):  # ... while local clients go on publishing
            lp.c.publish("q/%d" % i, b"m%d" % i, 1).wait_for_publish(5)
        m.start()  # same port, same saved sessions
        assert st.get(10).payload == b"1"
        rs = Paho(m.port, "central-sub", clean=False)
        got = [rs.get(10) for _ in range(10)]
        assert [(g.topic, g.payload, g.qos) for g in got] == [
            ("c/q/%d" % i, b"m%d" % i, 1) for i in range(10)
        ]
        assert rs.none(0.5)
        sys_dropped = Paho(b.port)
        sys_dropped.sub("$SYS/broker/messages/dropped")
        assert sys_dropped.get().payload == b"10"  # counted
        sys_dropped.stop()
        rp = Paho(m.port)
        rp.c.publish("cmd/after", b"back", 1).wait_for_publish(5)
        assert _topics(ls, 1) == [("cmd/after", b"back", 1, False)]
        assert lp.gone.empty() and ls.gone.empty()  # local clients never noticed
        for p in (rs, st, lp, ls, rp):
            p.stop()
        out = b.kill()
        assert_clean(out)
        assert "bridge edge: link to 127.0.0.1:%d lost" % m.port in out
    finally:
        if b is not None:
            b.kill()
        m.stop()


tls_broker = test_client_tls.tls_broker  # a Mosquitto TLS listener, its CA and another CA


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tls_to_the_remote(runtime, tmp_path, tls_broker):
    port, ca, other = tls_broker
    sub = ["mosquitto_sub", "-p", str(port), "--cafile", ca, "-t", "tls/#", "-C", "1", "-W", "5"]
    for cafile, ok in ((other, False), (ca, True)):
        conf = tmp_path / "tls.conf"
        conf.write_text(
            "connection edge\naddress 127.0.0.1:%d\nbridge_cafile %s\ntopic tls/# out 1\n"
            % (port, cafile)
        )
        b = _broker(runtime, conf)
        try:
            if not ok:  # a remote its CA file does not vouch for: refused, and said so
                out = b.wait_output("retrying", 10)
                assert "cannot connect to 127.0.0.1:%d" % port in out
                continue
            b.wait_output("bridge edge: connected to 127.0.0.1:%d" % port, 10)
            with subprocess.Popen(sub, stdout=subprocess.PIPE, text=True) as s:
                time.sleep(0.5)  # subscribed
                Paho(b.port).c.publish("tls/x", b"over TLS", 1).wait_for_publish(5)
                assert s.communicate(timeout=10)[0] == "over TLS\n"
        finally:
            assert_clean(b.kill())


def test_next_address_after_a_failure(tmp_path, remote):
    dead = harness.free_port()  # nothing listens there
    conf = tmp_path / "b.conf"
    conf.write_text(
        "connection edge\naddresses 127.0.0.1:%d 127.0.0.1:%d\nrestart_timeout 1\ntopic a/#\n"
        % (dead, remote.port)
    )
    b = _broker("midge", conf)
    try:
        out = b.wait_output("bridge edge: connected to 127.0.0.1:%d" % remote.port, 10)
        assert "cannot connect to 127.0.0.1:%d" % dead in out
    finally:
        assert_clean(b.kill())


BAD = [
    ("address 127.0.0.1\n", "2: address is a bridge option: put it after a `connection NAME`"),
    ("connection e\ntopic a/#\n", "2: bridge e: has no `address HOST[:PORT]`"),
    ("connection e\naddress h:1883\n", "2: bridge e: has no `topic` line"),
    ("connection e\naddress a:1 :2\n", "3: address: expected HOST[:PORT] ..."),
    ("connection e\naddress h:99999\n", "3: address: expected HOST[:PORT] ..."),
    ("connection e\naddress h\nround_robin false\n", "4: round_robin: false is not"),
    ("connection e\naddress h\ntopic a/# sideways\n", "4: topic: direction 'sideways'"),
    ("connection e\naddress h\ntopic a/# in 3\n", "4: topic: QoS '3' is not 0, 1 or 2"),
    ("connection e\naddress h\ntopic a/# in 1 L/\n", "4: topic: expected PATTERN [out|in|both"),
    ('connection e\naddress h\ntopic "" in 1 L ""\n', '4: topic: an empty ("") pattern needs'),
    ("connection e\naddress h\ntopic a/#/b\n", "4: topic: bad wildcard"),
    ("connection e\naddress h\ntopic # out 0 L/ +/\n", "4: topic: a prefix cannot hold"),
    ("connection e\naddress h\ntopic a\ntry_private yes\n", "5: try_private: expected true"),
    ("connection e\naddress h\ntopic a\nbridge_protocol_version mqttv50\n", "5: bridge_prot"),
    (
        "connection e\naddress h\ntopic a\nrestart_timeout 30 5\n",
        "5: restart_timeout: BASE 30 is above",
    ),
    ("connection e\naddress h\ntopic a\nkeepalive_interval 2\n", "5: keepalive_interval: at le"),
    ("connection e\naddress h\ntopic a\nidle_timeout 5\n", "5: unknown option 'idle_timeout'"),
    ("connection e\naddress h\ntopic a\nconnection e\n", "5: connection e: also at b.conf:2"),
    ("connection e\naddress h\nnotification_topic a/+\n", "4: notification_topic: invalid"),
    ("connection e\naddress h\nbridge_cafile /nonexistent/ca.crt\n", "4: bridge_cafile: cannot"),
    (
        "connection e\naddress h\ntopic a\nremote_password p\n",
        "2: bridge e: has a remote_password but",
    ),
]


@pytest.mark.parametrize("text,error", BAD)
def test_bad_bridge_lines_are_one_clear_error(text, error):
    with pytest.raises(brokerconf.ConfigError) as e:
        brokerconf.parse("# a bridge\n" + text, "b.conf")
    assert str(e.value).startswith("b.conf:" + error[0]) and error[1:] in str(e.value), e.value


def test_good_bridge_block_parses():
    c = brokerconf.parse(
        "connection edge\naddress central.example:8883 backup\ntopic # both 2 L/ R/\n"
        'topic "" in 0 here there\ntopic x/+\ncleansession true\nrestart_timeout 2 20\n'
        "remote_username u\nremote_password p\nnotifications false\ntry_private false\n"
        "max_connections 10\n"
    )
    (b,) = c["bridges"]
    assert b["addresses"] == [("central.example", 8883), ("backup", 1883)]
    assert b["restart_timeout"] == [2, 20]
    assert b["topics"] == [
        ("both", 2, "#", "L/", "R/"),
        ("in", 0, "", "here", "there"),
        ("out", 0, "x/+", "", ""),
    ]
    assert b["cleansession"] and not b["notifications"] and c["max_connections"] == 10


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_bridge_config_is_one_line_at_start(runtime, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("connection edge\naddress 127.0.0.1\ntopic a/# in 1 L/\n")
    cmd = [MIDGE, "broker"] if runtime == "midge" else RUNTIMES_CMD[runtime]
    env = dict(os.environ, MICROPYPATH=LIB + ":.frozen")
    r = subprocess.run(
        cmd + ["-c", str(conf)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and "\n" not in out and "bad.conf:3: topic:" in out, out


def _until(cond, secs=5):
    """Wait (1 ms steps) until cond() holds; False if it did not within secs."""
    end = time.monotonic() + secs
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("qos", [1, 2])
def test_inbound_ack_only_once_on_the_local_disk(runtime, qos, tmp_path, remote):
    # the bridge acknowledges (PUBACK, PUBREC) a message from the remote only once it is in
    # the local journal: kill -9 the moment the ack passes the proxy, restart, and the local
    # persistent subscriber still gets every message
    proxy = FaultProxy(remote.port)
    body = "topic in/# in %d\npersistence true\npersistence_file %s/db\n" % (qos, tmp_path)
    b = _bridged(runtime, tmp_path, proxy, body)
    try:
        keeper = _sub(b.port, "in/#", qos, cid="keeper", clean=False)
        # its session is on disk once a retained QoS 1 message after it is acknowledged
        keeper.c.publish("sync", b"1", 1, retain=True).wait_for_publish(5)
        keeper.stop()
        rp = Paho(remote.port)
        ack = 3 + qos  # PUBACK or PUBREC
        n = proxy.count("up", ack) + 3
        for i in range(3):
            rp.c.publish("in/%d" % i, b"m%d" % i, qos)
        assert _until(lambda: proxy.count("up", ack) == n)
        b.kill(signal.SIGKILL, wait=0)
        b = _bridged(runtime, tmp_path, proxy, body)
        keeper = Paho(b.port, "keeper", clean=False)
        assert keeper.connack == (True, 0)  # the session came back
        got = _some(keeper, 3)
        assert got == [("in/%d" % i, b"m%d" % i, qos, False) for i in range(3)], got
        assert keeper.none()
        rp.stop()
        keeper.stop()
    finally:
        assert_clean(b.kill())
        proxy.close()


@pytest.mark.parametrize("qos", [1, 2])
def test_inbound_ack_waits_while_the_journal_cannot_be_written(qos, tmp_path, remote):
    # a full disk: appends fail (a file size limit on the broker process) and so does the
    # rewrite (its new file is /dev/full); the bridge then acknowledges nothing, its link
    # closes and the remote sends the message again until the journal is written again
    # (CPython only: MicroPython does not ignore SIGXFSZ, the size limit would kill it)
    proxy = FaultProxy(remote.port)
    db = tmp_path / "db"
    body = "topic in/# in %d\npersistence true\npersistence_file %s\n" % (qos, db)
    b = _bridged("midge", tmp_path, proxy, body)
    try:
        keeper = _sub(b.port, "in/#", qos, cid="keeper", clean=False)
        # a large journal (the log file stays far below the limit) and on disk after this ack
        keeper.c.publish("pad", b"p" * 30000, 1, retain=True).wait_for_publish(5)
        keeper.stop()
        size = db.stat().st_size
        (tmp_path / "db.new").symlink_to("/dev/full")
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        ack = 3 + qos  # PUBACK or PUBREC
        n = proxy.count("up", ack)
        rp = Paho(remote.port)
        rp.c.publish("in/m", b"kept", qos)
        b.wait_output("lost: the local journal cannot be written: nothing acknowledged", 10)
        # the message comes again, and again nothing goes back (QoS 2: no PUBREC for the
        # resend either, as for a message already seen)
        assert _until(lambda: b.output().count("journal cannot be written") >= 2, 10)
        assert proxy.count("up", ack) == n and proxy.count("down", 3) >= 2  # sent again
        assert b.output().count("cannot write") == 1  # said once
        (tmp_path / "db.new").unlink()
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        assert _until(lambda: proxy.count("up", ack) > n, 10)  # the next resend: acknowledged
        assert "is written again" in b.output()
        b.kill(signal.SIGKILL, wait=0)
        b = _bridged("midge", tmp_path, proxy, body)
        keeper = Paho(b.port, "keeper", clean=False)
        got = _some(keeper, 10)
        assert got and set(got) == {("in/m", b"kept", qos, False)}, got  # at least once
        rp.stop()
        keeper.stop()
    finally:
        assert_clean(b.kill())
        proxy.close()


def _level(connect):
    """The protocol level byte of a CONNECT packet."""
    return connect[connect.index(b"MQTT") + 4]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("refusal", ["connack", "close"])
def test_remote_refusing_try_private_gets_a_plain_client(runtime, refusal, tmp_path, remote):
    # a remote that does not take level 0x84 (CONNACK 1, or it just closes): said once, then
    # the bridge connects at level 4 and carries messages both ways
    proxy = FaultProxy(remote.port)
    if refusal == "connack":
        proxy.answer_at("up", 1, bytes([0x20, 2, 0, 1]))  # CONNACK 1: unacceptable protocol
    else:
        proxy.cut_at("up", 1, after=False)
    b = _bridged(runtime, tmp_path, proxy, "topic up/# out 1\ntopic down/# in 1\n")
    try:
        levels = [_level(p) for d, t, _, p in proxy.seen if t == 1]
        assert levels == [0x84, 4], levels
        rs = _sub(remote.port, "up/#")
        ls = _sub(b.port, "down/#")
        Paho(b.port).c.publish("up/x", b"u", 1).wait_for_publish(5)
        assert _topics(rs, 1) == [("up/x", b"u", 1, False)]
        Paho(remote.port).c.publish("down/x", b"d", 1).wait_for_publish(5)
        assert _topics(ls, 1) == [("down/x", b"d", 1, False)]
        for p in (rs, ls):
            p.stop()
        out = b.kill()
        assert out.count("try_private refused, connecting as a plain client") == 1, out
        assert out.count("bridge edge: connected to") == 1, out
        assert_clean(out)
    finally:
        b.kill()
        proxy.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("private", [True, False])
def test_mosquitto_bridged_to_midge(runtime, private, tmp_path):
    # Mosquitto's own bridge (the local side) to midge (the remote): with try_private (the
    # default) midge echoes nothing back and keeps retain=1 to it, so retained messages are
    # kept on both sides; as a plain client (try_private false) Mosquitto gets its own
    # message back once (MQTT 3.1.1 has no no-local), and a retained message from midge is
    # live (retain 0) to it: not kept. Never a loop.
    far = Broker("fast", cmd=[MIDGE, "broker"]) if runtime == "midge" else Broker(runtime)
    conf = "connection edge\naddress 127.0.0.1:%d\ntopic x/# both 1\ntopic probe in 1\n"
    m = harness.Mosquitto(extra=conf % far.port + ("" if private else "try_private false\n"))
    try:
        m.start()
        probe = _sub(m.port, "probe")
        rp = Paho(far.port)

        def bridged():  # the bridge has subscribed on midge
            rp.c.publish("probe", b"", 1).wait_for_publish(5)
            return not probe.msgs.empty() or _until(lambda: not probe.msgs.empty(), 0.2)

        assert _until(bridged, 10)
        ms = _sub(m.port, "x/#")
        rs = _sub(far.port, "x/#")
        mp = Paho(m.port)
        mp.c.publish("x/up", b"u", 1).wait_for_publish(5)
        assert _topics(rs, 1) == [("x/up", b"u", 1, False)]
        assert _topics(ms, 2 - private) == [("x/up", b"u", 1, False)] * (2 - private)
        rp.c.publish("x/down", b"d", 1).wait_for_publish(5)
        assert _topics(ms, 1) == _topics(rs, 1) == [("x/down", b"d", 1, False)]
        assert ms.none(0.5) and rs.none(0.1)  # nothing more: no loop
        rp.c.publish("x/far", b"f", 1, retain=True).wait_for_publish(5)
        mp.c.publish("x/near", b"n", 1, retain=True).wait_for_publish(5)
        live = [("x/far", b"f", 1, False), ("x/near", b"n", 1, False)]
        assert _topics(ms, 2 + (not private)) == sorted(live + [live[1]] * (not private))
        assert _topics(rs, 2) == live
        kept = [("x/far", b"f", 1, True), ("x/near", b"n", 1, True)]
        assert _topics(_sub(m.port, "x/#"), 1 + private) == kept[not private :]
        assert _topics(_sub(far.port, "x/#"), 2) == kept
        for p in (probe, rp, ms, rs, mp):
            p.stop()
    finally:
        m.stop()
        assert_clean(far.kill())
