"""`midge provision` against the virtual board with the real mpremote."""

import json
import os
import subprocess
import sys

import support
from vbtools import ROOT, midge, vboard  # noqa: F401  (pytest fixture)

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
