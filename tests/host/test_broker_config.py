"""midge's broker with a config file, as a real process on CPython and MicroPython: password
file + ACL, secure-by-default start, config errors, persistence across kill -9."""

import os
import signal
import subprocess
import sys
import time

import pytest
from brokerproc import LIB, ROOT, RUNTIMES, Broker, Raw, available
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


@pytest.mark.parametrize("runtime", ALL)
def test_acknowledged_qos1_survives_kill_9(runtime, tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text("persistence true\npersistence_file %s\n" % (tmp_path / "midge.db"))
    b = Broker(runtime, str(conf))
    try:
        s = Paho(b.port, "durable", clean=False)
        s.sub("k/#", 1)
        s.stop()
        p = Paho(b.port)
        acked = []
        t_end = time.monotonic() + 10
        i = 0
        while len(acked) < 60 and time.monotonic() < t_end:
            info = p.c.publish("k/t", b"m%03d" % i, 1)
            if i == 40:  # under load: the next ones are in flight when the broker dies
                for _ in range(8):
                    p.c.publish("k/t", b"x%03d" % i, 1)
            info.wait_for_publish(5)
            acked.append(b"m%03d" % i)
            i += 1
        b.kill(signal.SIGKILL)
        p.c.loop_stop()
        b = Broker(runtime, str(conf), port=b.port)
        s2 = Paho(b.port, "durable", clean=False)
        assert s2.connack[0] is True
        got = set()
        try:
            while True:
                got.add(s2.get(timeout=1.5).payload)
        except Exception:
            pass
        missing = [m for m in acked if m not in got]
        assert not missing, missing
        s2.stop()
    finally:
        b.kill()
