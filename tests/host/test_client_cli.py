"""`midge pub`, `midge sub` and `midge monitor` as a user runs them, against Mosquitto and
its own mosquitto_pub/mosquitto_sub."""

import json
import os
import select
import shutil
import subprocess
import sys
import time

import pytest
import support

MIDGE = [sys.executable, "-m", "host_tools"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def midge(*args, **kw):
    return subprocess.run(MIDGE + list(args), cwd=ROOT, capture_output=True, timeout=20, **kw)


@pytest.fixture
def broker():
    host, port = support.mosquitto()
    return ["-h", host, "-p", str(port)]


def read_line(proc, secs=10):
    """The next stdout line of proc (bytes), waiting at most secs."""
    line = b""
    end = time.monotonic() + secs
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise AssertionError("no line from %s within %s s: %r" % (proc.args, secs, line))
        c = os.read(proc.stdout.fileno(), 1)
        if not c:
            raise AssertionError("%s ended: %r" % (proc.args, line + proc.stderr.read()))
        line += c
    return line


def test_midge_sub_gets_mosquitto_pub_and_midge_pub(broker):
    if not shutil.which("mosquitto_pub"):
        pytest.skip("mosquitto_pub not installed")
    topic = support.unique("cli/t")
    # a retained probe: `midge sub` prints it once its subscription is in place
    assert midge("pub", *broker, "-t", topic + "/0", "-m", "ready", "-r").returncode == 0
    sub = subprocess.Popen(
        MIDGE + ["sub"] + broker + ["-t", topic + "/#", "-v", "-C", "4", "-q", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert read_line(sub) == (topic + "/0 ready\n").encode()
        assert (
            midge("pub", *broker, "-t", topic + "/a", "-m", "from midge", "-q", "1").returncode == 0
        )
        subprocess.run(
            ["mosquitto_pub", "-p", broker[3], "-t", topic + "/b", "-m", "from mosquitto"],
            check=True,
        )
        assert midge("pub", *broker, "-t", topic + "/c", "-n", "-q", "2").returncode == 0
        out, err = sub.communicate(timeout=15)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
        midge("pub", *broker, "-t", topic + "/0", "-n", "-r")  # clear the probe
    assert sub.returncode == 0, err
    assert out.decode().splitlines() == [
        topic + "/a from midge",
        topic + "/b from mosquitto",
        topic + "/c ",
    ]


def test_midge_pub_retained_to_mosquitto_sub(broker):
    if not shutil.which("mosquitto_sub"):
        pytest.skip("mosquitto_sub not installed")
    topic = support.unique("cli/r")
    r = midge("pub", *broker, "-t", topic, "-l", "-r", "-q", "1", input=b"one\ntwo\n")
    assert r.returncode == 0, r.stderr
    out = subprocess.run(
        ["mosquitto_sub", "-p", broker[3], "-t", topic, "-C", "1", "-W", "5"],
        capture_output=True,
        timeout=10,
    ).stdout
    assert out == b"two\n"  # the last retained line
    midge("pub", *broker, "-t", topic, "-n", "-r")


@pytest.mark.parametrize(
    "args,message",
    [
        (["pub", "-p", "1", "-t", "x", "-m", "y"], "midge pub: cannot connect to localhost:1: "),
        (["pub", "-t", "x/#", "-m", "y"], "midge pub: invalid topic name 'x/#'"),
        (["sub", "-t", "a/#/b", "-W", "1"], "midge sub: bad wildcard in topic filter 'a/#/b'"),
        (["pub", "-m", "y"], "midge pub: a topic is needed (-t)"),
        (["pub", "-t", "x"], "midge pub: a payload is needed: -m, -f, -s, -l or -n"),
        (["pub", "-t", "x", "-f", "/nonexistent"], "midge pub: cannot read /nonexistent: "),
        (
            ["pub", "-t", "x", "-m", "y", "--cafile", "/nonexistent"],
            "midge pub: --cafile /nonexistent: no such file",
        ),
        (
            ["pub", "-t", "x", "-m", "y", "-P", "secret"],
            "midge pub: a password (-P) needs a username (-u)",
        ),
    ],
)
def test_bad_input_is_one_line(broker, args, message):
    if args[1] != "-p":
        args = args[:1] + broker + args[1:]
    r = midge(*args)
    err = r.stderr.decode()
    assert r.returncode == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert "secret" not in err


def test_wrong_password_is_one_line_and_not_echoed():
    host, port = support.mosquitto("auth")
    env = dict(os.environ, MIDGE_MQTT_PASSWORD="not-" + support.auth_password())
    r = midge("pub", "-h", host, "-p", str(port), "-u", "drone", "-t", "x", "-m", "y", env=env)
    err = r.stderr.decode()
    assert (
        r.returncode == 2 and err == "midge pub: connection refused: not authorized (CONNACK 5)\n"
    )
    env["MIDGE_MQTT_PASSWORD"] = support.auth_password()
    r = midge("pub", "-h", host, "-p", str(port), "-u", "drone", "-t", "x", "-m", "y", env=env)
    assert r.returncode == 0, r.stderr


def test_monitor_reports_figures(broker):
    r = midge("monitor", *broker, "-q", "1", "-n", "50", "--json")
    assert r.returncode == 0, r.stderr
    fig = json.loads(r.stdout)
    assert fig["sent"] == fig["received"] == 50
    assert 0 < fig["connect_ms"] < 5000
    assert 0 < fig["publish_ms"]["50"] <= fig["publish_ms"]["99"] <= fig["publish_ms"]["max"]
    assert 0 < fig["latency_ms"]["50"] <= fig["latency_ms"]["max"]
    r = midge("monitor", *broker, "-n", "20")
    assert r.returncode == 0 and b"receive latency  p50" in r.stdout
