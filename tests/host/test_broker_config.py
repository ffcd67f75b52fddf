"""midge's broker with a config file, as a real process on CPython and MicroPython: password
file + ACL, secure-by-default start, config errors, persistence across kill -9."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from brokerproc import LIB, ROOT, RUNTIMES, Broker, Raw, assert_clean, available
from test_broker_peers import Paho

ALL = [r for r in ("cpython", "fast", "micropython") if available(r)]


def _passwd(path, user, pw):
    subprocess.run(
        [sys.executable, "-m", "host_tools", "passwd", "-c", "-b", path, user, pw],
        cwd=ROOT,
        check=True,
        timeout=30,
    )


@pytest.mark.parametrize("runtime", ALL)
def test_password_file_and_acl(runtime, tmp_path):
    pw = "pw-" + os.urandom(6).hex()
    _passwd(str(tmp_path / "pw"), "drone", pw)
    (tmp_path / "acl").write_text("user drone\ntopic readwrite drone/#\ntopic deny drone/secret\n")
    conf = tmp_path / "c.conf"
    conf.write_text("password_file %s\nacl_file %s\n" % (tmp_path / "pw", tmp_path / "acl"))
    b = Broker(runtime, str(conf))
    try:
        r = Raw(b.port)
        assert r.connect("anon").return_code == 5  # password file: no anonymous
        r = Raw(b.port)
        assert r.connect("x", username="drone", password=b"wrong").return_code == 4
        r = Raw(b.port)
        assert r.connect("x", username="drone", password=pw.encode()).return_code == 0
        C = r.codec
        r.send(C.Subscribe(3, [("drone/a", 1), ("other/#", 0), ("drone/secret", 0)]))
        assert r.recv() == C.Suback(3, [1, 0x80, 0x80])
        r.send(C.Publish("drone/a", b"ok", 0))
        assert r.recv().payload == b"ok"
    finally:
        b.kill()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_bad_config_and_open_listener_are_one_line_errors(runtime, tmp_path):
    if not available(runtime):
        pytest.skip("runtime not available")
    conf = tmp_path / "bad.conf"
    conf.write_text("# ok\nmax_connections lots\n")
    env = dict(os.environ, PYTHONPATH=LIB, MICROPYPATH=LIB + ":.frozen")
    cmd = list(RUNTIMES[runtime])
    r = subprocess.run(
        cmd + ["--config", str(conf)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and "\n" not in out, out
    assert "bad.conf:2" in out and "max_connections" in out
    r = subprocess.run(
        cmd + ["--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2 and "refusing to listen on 0.0.0.0" in out and "\n" not in out


def _loader(port):
    """A paho publisher and a condition that is notified on every PUBACK/PUBCOMP."""
    cv = threading.Condition()
    acked = [0]

    def on_publish(cl, ud, mid, rc, props):
        with cv:
            acked[0] += 1
            cv.notify_all()

    connected = queue.Queue()
    p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loader")
    p.max_inflight_messages_set(20)
    p.on_publish = on_publish
    p.on_connect = lambda cl, ud, fl, rc, pr: connected.put(rc)
    p.connect("127.0.0.1", port, 60)
    p.loop_start()
    assert connected.get(timeout=5) == 0
    return p, cv, acked


@pytest.mark.parametrize("runtime", ALL)
def test_acknowledged_qos1_and_qos2_survive_kill_9_mid_stream(runtime, tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text(
        "persistence true\npersistence_file %s\nmax_queued_messages 100000\n"
        % (tmp_path / "midge.db")
    )
    b = Broker(runtime, str(conf))
    p = None
    try:
        s = Paho(b.port, "durable", clean=False)
        s.sub("k/#", 2)
        s.stop()
        p, cv, acked = _loader(b.port)
        sent = []  # (payload, qos, paho MQTTMessageInfo)
        deadline = time.monotonic() + 20
        i = 0
        # stream QoS 1 and QoS 2 (at most 100 unacknowledged, 20 of them in flight), and
        # kill -9 the broker while that stream is running
        while acked[0] < 300:
            q = 1 + i % 2
            payload = b"q%d-%05d" % (q, i)
            sent.append((payload, q, p.publish("k/t", payload, q)))
            i += 1
            with cv:
                while len(sent) - acked[0] > 100:
                    assert time.monotonic() < deadline, "stream stalled at %d acks" % acked[0]
                    cv.wait(1)
        b.kill(signal.SIGKILL)
        p.loop_stop()
        ok = [(m, q) for m, q, info in sent if info.is_published()]
        assert len(ok) >= 300 and len(ok) < len(sent), (len(ok), len(sent))  # mid-stream
        assert {q for m, q in ok} == {1, 2}

        b = Broker(runtime, str(conf), port=b.port)
        s2 = Paho(b.port, "durable", clean=False)
        assert s2.connack[0] is True
        want = {m: q for m, q in ok}
        got = {}
        end = time.monotonic() + 15
        while not want.keys() <= got.keys() and time.monotonic() < end:
            try:
                m = s2.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            got.setdefault(m.payload, []).append(m.qos)
        missing = sorted(set(want) - set(got))
        assert not missing, "%d acknowledged messages lost, e.g. %r" % (len(missing), missing[:5])
        for m, q in want.items():
            assert got[m][0] == q, (m, got[m])  # delivered at the QoS it was published with
            if q == 2:
                assert len(got[m]) == 1, (m, got[m])  # exactly once
        for q in (b"q1", b"q2"):  # each QoS in the order it was published (dicts keep order)
            seq = [m for m in got if m.startswith(q)]
            assert seq == sorted(seq), seq
        s2.stop()
        assert_clean(b.kill())
    finally:
        if p is not None:
            p.loop_stop()
        b.kill()


@pytest.mark.parametrize("runtime", ALL + ["mosquitto"])
def test_will_the_acl_denies_is_dropped_as_mosquitto_does(runtime, tmp_path):
    """A paho client whose will goes to a topic it may not write is let in (CONNACK 0) and
    its will never reaches anyone; the same file and clients on Mosquitto 2 behave the same."""
    import harness

    acl = tmp_path / "acl"
    acl.write_text("topic read #\npattern write out/%c/#\n")
    if runtime == "mosquitto":
        if harness.mosquitto_path() is None:
            pytest.skip("mosquitto not installed")
        b = harness.Mosquitto(extra="acl_file %s" % acl).start()
        stop = b.stop
    else:
        conf = tmp_path / "c.conf"
        conf.write_text("acl_file %s\n" % acl)
        b = Broker(runtime, str(conf))
        stop = b.kill
    try:
        watch = Paho(b.port, "watch")
        assert watch.sub("#") == [mqtt.ReasonCode(mqtt.PacketTypes.SUBACK, identifier=0)]
        wills = []
        for cid, topic in (("bad", "alarm/fire"), ("good", "out/good/status")):
            p = Paho(b.port, cid, will=(topic, b"gone from " + cid.encode(), 1, True))
            assert p.connack[1] == 0
            wills.append(p)
        for p in wills:  # drop the links without DISCONNECT: wills are due
            p.c.loop_stop()
            p.c.socket().close()
        m = watch.get()
        assert (m.topic, m.payload) == ("out/good/status", b"gone from good")
        watch.none()
        watch.stop()
    finally:
        stop()
