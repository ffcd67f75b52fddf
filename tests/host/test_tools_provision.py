"""`midge provision` against the virtual board with the real mpremote."""

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import threading
import time

import harness
import support
from vbtools import ROOT, midge, vboard  # noqa: F401  (pytest fixture)

from host_tools import fwlayout

sys.path.insert(0, os.path.join(ROOT, "lib"))
from midge import auth  # noqa: E402


def _env(**kw):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MIDGE_") or k.startswith("MIDGE_TEST")
    }
    env.update(kw)
    return env


def _read(vb, name):
    with open(os.path.join(vb.flash_dir, name)) as f:
        return f.read()


def test_sensor_config_written_once_and_secrets_never_shown(vboard):  # noqa: F811
    wifi_pw, broker_pw = "wifi-" + os.urandom(6).hex(), "mqtt-" + os.urandom(6).hex()
    env = _env(
        MIDGE_WIFI_PASSWORD=wifi_pw, MIDGE_BROKER_PASSWORD=broker_pw, MIDGE_SENSOR_ID="drone01"
    )
    args = ("provision", "--port", vboard.device, "--role", "sensor", "--ssid", "field-net")
    args += ("--broker-host", "10.0.0.5", "--user", "drone", "--qos", "1", "--kinds", "altitude")
    r = midge(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "/config.json: written, sha256 verified" in r.stdout
    for secret in (wifi_pw, broker_pw):
        assert secret not in r.stdout + r.stderr
    cfg = json.loads(_read(vboard, "config.json"))
    assert cfg == {
        "role": "sensor",
        "wifi": {"ssid": "field-net", "password": wifi_pw},
        "broker": {"host": "10.0.0.5", "user": "drone", "password": broker_pw},
        "sensor": {"id": "drone01", "qos": 1, "kinds": ["altitude"]},
    }
    assert not os.path.exists(os.path.join(vboard.flash_dir, "passwd"))
    again = midge(*args, env=env)
    assert again.returncode == 0 and "/config.json: unchanged" in again.stdout


def test_broker_role_password_file_is_hashed_and_stable(vboard, tmp_path):  # noqa: F811
    pw = "pw-" + os.urandom(6).hex()
    conf = tmp_path / "board.json"
    conf.write_text(json.dumps({"role": "broker", "broker": {"user": "drone", "password": pw}}))
    os.chmod(str(conf), 0o600)
    r = midge("provision", "--port", vboard.device, "--config", conf, "--no-prompt", env=_env())
    assert r.returncode == 0, r.stderr
    assert pw not in r.stdout + r.stderr
    line = _read(vboard, "passwd").strip()
    user, _, field = line.partition(":")
    assert user == "drone" and auth.verify_password(pw, field) and pw not in line
    assert "password_file passwd" in _read(vboard, "broker.conf")
    again = midge("provision", "--port", vboard.device, "--config", conf, "--no-prompt", env=_env())
    assert "/passwd: unchanged" in again.stdout and _read(vboard, "passwd").strip() == line
    pw2 = "pw-" + os.urandom(6).hex()  # a flag/env value wins over the file
    r = midge(
        "provision", "--port", vboard.device, "--config", conf, env=_env(MIDGE_BROKER_PASSWORD=pw2)
    )
    assert "/passwd: written, sha256 verified" in r.stdout
    assert auth.verify_password(pw2, _read(vboard, "passwd").strip().partition(":")[2])


def test_bad_or_missing_values_are_one_line(vboard):  # noqa: F811
    base = ("provision", "--port", vboard.device, "--no-prompt")
    cases = [
        (("--role", "sensor", "--id", "d1", "--user", "u"), "broker password for user u missing"),
        (("--role", "sensor", "--id", "d1"), "broker.host is missing"),
        (("--role", "sensor", "--id", "a/b", "--broker-host", "h"), "sensor.id must be"),
        (
            ("--role", "sensor", "--id", "d1", "--broker-host", "h", "--interval-ms", "5"),
            "interval_ms",
        ),
        (
            (
                "--role",
                "broker",
            ),
            "needs --user",
        ),
    ]
    for extra, message in cases:
        r = midge(*(base + extra), env=_env())
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not os.path.exists(os.path.join(vboard.flash_dir, "config.json"))


def test_provisioned_drone_publishes_after_reset(vboard):  # noqa: F811
    host, port = support.mosquitto()
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            host,
            "-p",
            str(port),
            "-t",
            "sensors/vdrone/#",
            "-v",
            "-C",
            "3",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert midge("deploy", "--port", vboard.device).returncode == 0
        r = midge(
            *("provision", "--port", vboard.device, "--role", "sensor", "--id", "vdrone"),
            *("--broker-host", host, "--broker-port", port, "--interval-ms", "200", "--reset"),
            env=_env(),
        )
        assert r.returncode == 0, r.stderr
        out, _ = sub.communicate(timeout=25)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    topics = {line.split()[0] for line in out.splitlines()}
    assert "sensors/vdrone/altitude" in topics, out


def _connack(port, user=None, password=None, sub=None):
    """paho-mqtt's CONNACK return code from the broker at 127.0.0.1:port, and the client (still
    connected when accepted; with `sub`, subscribed to it, messages in client.got)."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=support.unique("pv"))
    c.got, codes = [], []
    done = threading.Event()
    if user:
        c.username_pw_set(user, password)
    c.on_connect = lambda c, u, f, rc, p: (codes.append(rc), done.set())
    c.on_subscribe = lambda *a: done.set()
    c.on_message = lambda c, u, m: c.got.append((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    # paho reports refusals as MQTT 5 reason codes: 134 = 3.1.1 code 4, 135 = code 5
    code = {0: 0, 134: 4, 135: 5}[codes[0].value]
    if code or not sub:
        return code, c
    done.clear()
    c.subscribe(sub, 1)
    assert done.wait(5), "no SUBACK"
    return code, c


def test_provisioned_broker_role_serves_host_clients(vboard):  # noqa: F811
    """Role broker: `midge provision` writes /passwd (hashed) and /broker.conf, the board
    resets and runs midge's broker; host clients get in with that password only."""
    fwlayout.build(vboard.flash_dir)  # what `midge deploy` puts there (tested in test_tools_deploy)
    port, pw = harness.free_port(), "pw-" + os.urandom(6).hex()
    r = midge(
        *("provision", "--port", vboard.device, "--role", "broker", "--user", "drone"),
        *("--broker-port", port, "--reset"),
        env=_env(MIDGE_BROKER_PASSWORD=pw),
    )
    assert r.returncode == 0, r.stderr
    assert pw not in r.stdout + r.stderr and pw not in _read(vboard, "passwd")
    harness.wait_port(port, timeout=15)
    clients = []
    try:
        code, sub = _connack(port, "drone", pw, sub="hangar/#")
        clients.append(sub)
        assert code == 0
        topic = "hangar/" + support.unique("t")
        code, p = _connack(port, "drone", pw)
        clients.append(p)
        assert code == 0
        p.publish(topic, b"hello", qos=1).wait_for_publish(5)
        end = time.monotonic() + 5
        while (topic, b"hello") not in sub.got and time.monotonic() < end:
            time.sleep(0.02)
        assert sub.got == [(topic, b"hello")]
        for user, password in (("drone", pw + "x"), ("nobody", pw), (None, None)):
            code, c = _connack(port, user, password)
            clients.append(c)
            assert code in (4, 5), (user, code)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()


def test_cafile_lands_on_the_board_and_turns_tls_on(vboard, tmp_path):  # noqa: F811
    ca = tmp_path / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(ca)]
        + ["-subj", "/CN=midge-test-ca", "-days", "1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    args = ("provision", "--port", vboard.device, "--role", "sensor", "--id", "d1")
    args += ("--broker-host", "10.0.0.5", "--cafile", ca, "--no-prompt")
    r = midge(*args, env=_env())
    assert r.returncode == 0, r.stderr
    assert "/ca.pem: written, sha256 verified" in r.stdout
    assert _read(vboard, "ca.pem") == ca.read_text()
    cfg = json.loads(_read(vboard, "config.json"))
    assert cfg["broker"]["cafile"] == "/ca.pem" and cfg["broker"]["tls"] is True
    # the board's own config check takes it: TLS on, port 8883 by default
    sys.path.insert(0, os.path.join(ROOT, "firmware"))
    from app import config

    checked = config.check(cfg)
    assert checked["broker"]["port"] == 8883 and checked["broker"]["cafile"] == "/ca.pem"
    again = midge(*args, env=_env())
    assert "/ca.pem: unchanged" in again.stdout and "/config.json: unchanged" in again.stdout
    (tmp_path / "bad.pem").write_text("not a certificate")
    bad = midge(*args[:-3], "--cafile", tmp_path / "bad.pem", "--no-prompt", env=_env())
    assert bad.returncode == 2 and "not a PEM or DER certificate" in bad.stderr


def _pty_read_until(fd, want, secs=30):
    out, end = b"", time.monotonic() + secs
    while want not in out:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        out += data
    return out


def test_prompted_passwords_are_not_echoed_nor_printed(vboard):  # noqa: F811
    """No password in flags, env or file: `midge provision` in a terminal asks for both
    through getpass; the terminal shows neither, the board gets both."""
    wifi_pw, broker_pw = "wifi-" + os.urandom(6).hex(), "mqtt-" + os.urandom(6).hex()
    master, slave = pty.openpty()
    args = ("provision", "--port", vboard.device, "--role", "sensor", "--id", "d1")
    args += ("--ssid", "field-net", "--broker-host", "10.0.0.5", "--user", "drone")
    p = subprocess.Popen(
        [sys.executable, "-m", "host_tools", *args],
        cwd=ROOT,
        env=_env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,  # the pty becomes its terminal: getpass reads /dev/tty
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    try:
        out = _pty_read_until(master, b"Wi-Fi password for field-net")
        assert b"Wi-Fi password for field-net" in out, out
        os.write(master, wifi_pw.encode() + b"\n")
        out += _pty_read_until(master, b"broker password for drone:")
        assert b"broker password for drone:" in out, out
        os.write(master, broker_pw.encode() + b"\n")
        out += _pty_read_until(master, b"\x00never")  # to the end of its output
        assert p.wait(10) == 0, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    text = out.decode("utf-8", "replace")
    assert "/config.json: written, sha256 verified" in text, text
    assert wifi_pw not in text and broker_pw not in text
    cfg = json.loads(_read(vboard, "config.json"))
    assert cfg["wifi"]["password"] == wifi_pw and cfg["broker"]["password"] == broker_pw
