"""The board app end to end, CPython side: firmware/main.py runs as a process on the real
MicroPython interpreter (and unchanged on CPython) against real Mosquitto, watched by a
paho-mqtt subscriber; plus the Wi-Fi step on a virtual board with its `network` module."""

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import harness
import paho.mqtt.client as paho
import pytest
import support

from host_tools import fwlayout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(ROOT, "firmware", "main.py")
PATH = os.pathsep.join([os.path.join(ROOT, "lib"), os.path.join(ROOT, "firmware"), ROOT])
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
# MicroPython runs the flash folder as a board does: main.py + .mpy modules under lib/
RUNTIMES = {
    "micropython": (
        [MICROPYTHON, "-X", "heapsize=128K", "main.py"],
        {"MICROPYPATH": "lib:.frozen"},
    ),
    "cpython": ([sys.executable, MAIN], {"PYTHONPATH": PATH}),
}


class Watcher:
    """paho-mqtt subscribed to sensors/#: every message as (topic, payload, qos, retain)."""

    def __init__(self, port, user=None, password=None):
        self.got = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=support.unique("watch"))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload, m.qos, m.retain))
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe("sensors/#", 2)
        assert done.wait(5)

    def wait(self, pred, secs=15):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            if pred(self.got):
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def board(tmp_path, config, runtime="micropython", heap="128K"):
    """Start the app in a flash folder holding `config`; returns the process."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    if runtime == "micropython":
        fwlayout.build(str(tmp_path))
    argv, env = RUNTIMES[runtime]
    argv = [a.replace("heapsize=128K", "heapsize=" + heap) for a in argv]
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=dict(os.environ, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(p):
    if p.poll() is None:
        p.kill()
    return p.communicate(timeout=10)[0]


def drone_config(sid, port, **sensor):
    s = {"id": sid, "interval_ms": 200, "qos": 1, "kinds": ["altitude", "temperature"]}
    s.update(sensor)
    return {
        "board": "unix",
        "role": "sensor",
        "broker": {"host": "127.0.0.1", "port": port},
        "sensor": s,
    }


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_drone_publishes_readings_and_its_will(tmp_path, runtime):
    port = support.mosquitto()[1]
    sid = support.unique("drone")
    w = Watcher(port)
    p = board(tmp_path, drone_config(sid, port, qos=1), runtime)
    try:
        alt, temp = "sensors/%s/altitude" % sid, "sensors/%s/temperature" % sid
        assert w.wait(lambda g: sum(1 for m in g if m[0] == alt) >= 5), w.got
        status = [m for m in w.got if m[0] == "sensors/%s/status" % sid]
        assert status and status[0][1] == b"online"
        for topic, payload, qos, retain in w.got:
            if topic in (alt, temp):
                assert qos == 1 and not retain
                float(payload)
        t = [m for m in w.got if m[0] == alt]
        p.kill()  # power cut: no DISCONNECT, so the broker publishes the will
        assert w.wait(lambda g: g[-1][:2] == ("sensors/%s/status" % sid, b"offline")), w.got[-3:]
    finally:
        out = stop(p)
        w.close()
    assert "Traceback" not in out, out
    assert len(t) <= 5 + 10  # about one batch per 200 ms, no bursts
    # the will is retained: a late subscriber learns the drone is offline
    late = Watcher(port)
    try:
        assert late.wait(lambda g: ("sensors/%s/status" % sid, b"offline", 1, True) in g), late.got
    finally:
        late.close()


def test_drone_logs_in_with_user_and_password(tmp_path):
    port = support.mosquitto("auth")[1]
    pw = support.auth_password()
    sid = support.unique("drone")
    cfg = drone_config(sid, port, kinds=["temperature"], qos=0)
    cfg["broker"].update(user=harness.AUTH_USER, password=pw)
    w = Watcher(port, harness.AUTH_USER, pw)
    p = board(tmp_path, cfg)
    try:
        assert w.wait(lambda g: any(m[0] == "sensors/%s/temperature" % sid for m in g)), w.got
        assert all(m[2] == 0 for m in w.got if m[0].endswith("/temperature"))
    finally:
        out = stop(p)
        w.close()
    assert pw not in out


def test_broken_config_idles_with_one_line(tmp_path):
    cfg = drone_config("d1", 1883, qos=7)
    p = board(tmp_path, cfg)
    out = p.communicate(timeout=20)[0]
    assert p.returncode == 0
    assert out.splitlines() == [
        "midge: config.json: sensor.qos must be 0, 1 or 2 (got 7)",
        "midge: idle, REPL free",
    ]


def test_role_both_serves_its_own_drone(tmp_path):
    port = harness.free_port()
    sid = support.unique("drone")
    cfg = {"board": "unix", "role": "both", "broker": {"port": port}}
    cfg["sensor"] = {"id": sid, "interval_ms": 200, "kinds": ["altitude"]}
    # broker + client + app need ~100 KB of heap on the 64-bit unix port before they run
    p = board(tmp_path, cfg, heap="256K")
    try:
        harness.wait_port(port, timeout=10, proc=p)
        w = Watcher(port)
        try:
            assert w.wait(lambda g: sum(m[0] == "sensors/%s/altitude" % sid for m in g) >= 3), w.got
        finally:
            w.close()
        # the status went out before the readings: a subscriber that comes now gets it
        # retained (the first one may have subscribed before it was published)
        status = ("sensors/%s/status" % sid, b"online", 1, True)
        late = Watcher(port)
        try:
            assert late.wait(lambda g: status in g, 5), late.got
        finally:
            late.close()
    finally:
        out = stop(p)
    assert "listening on 127.0.0.1:%d" % port in out and "Traceback" not in out


@contextlib.contextmanager
def virtual_board(tmp_path, board_name, config, wifi):
    """Boot a virtual board (board files + config in its flash folder); yields the board and
    a console (its output lines in .lines) on the board's port, which is open read-write
    as `fd` on the console."""
    from host_tools.demo import Console
    from host_tools.vboard import VirtualBoard

    if not (tmp_path / "main.py").exists():
        fwlayout.build(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config))
    with VirtualBoard(str(tmp_path), board=board_name, wifi=wifi) as vb:
        fd = os.open(vb.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        con = Console(board_name, fd, owned=True)
        con.start()
        try:
            yield vb, con
        finally:
            con.stop()


def until(pred, secs=20):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def seen(con, want, times=1):
    return lambda: sum(want in ln for ln in con.lines) >= times


def vboard_console(tmp_path, board_name, config, wifi, want, secs=20):
    """The console output of a virtual board once `want` appears in it (or secs passed)."""
    with virtual_board(tmp_path, board_name, config, wifi) as (vb, con):
        until(seen(con, want), secs)
    return con.lines


def test_wifi_join_on_a_virtual_esp32(tmp_path):
    port = support.mosquitto()[1]
    sid = support.unique("drone")
    cfg = drone_config(sid, port)
    cfg.update(board="esp32", wifi={"ssid": "hangar", "password": "right-pw"}, watchdog=True)
    with virtual_board(tmp_path, "esp32", cfg, {"hangar": "right-pw"}) as (vb, con):
        assert until(seen(con, "connected to")), con.lines
        # the drone feeds its watchdog (8 s on the ESP32) in every loop step while it flies
        assert until(lambda: vb.watchdog.get("feeds", 0) >= 10, 15), vb.watchdog
        wdt, causes = dict(vb.watchdog), list(vb.causes)
    text = "\n".join(con.lines)
    assert "wifi: joining hangar (attempt 1 of 5)" in text
    assert "midge: wifi up, address 127.0.0.1" in text
    assert "midge: connected to 127.0.0.1:%d" % port in text, text
    assert wdt["timeout_ms"] == 8000
    assert wdt["max_gap_ms"] < wdt["timeout_ms"] // 4, wdt  # the firmware's feeding period
    assert causes == []  # never reset


def test_watchdog_resets_a_board_whose_firmware_stops_feeding(tmp_path):
    """Ctrl-C stops the drone with its watchdog armed: nothing feeds it at the REPL, so the
    board resets with cause WDT_RESET and boots the firmware again."""
    port = support.mosquitto()[1]
    fwlayout.build(str(tmp_path))
    # this ESP32's board file, as deployed, with a 1.5 s watchdog to keep the test short
    esp32 = (pathlib.Path(ROOT) / "boards" / "esp32.py").read_text()
    assert '"watchdog_ms": 8000' in esp32
    (tmp_path / "boards" / "esp32.mpy").unlink()
    (tmp_path / "boards" / "esp32.py").write_text(esp32.replace("8000", "1500"))
    cfg = drone_config(support.unique("drone"), port)
    cfg.update(board="esp32", wifi={"ssid": "hangar", "password": "pw1"}, watchdog=True)
    with virtual_board(tmp_path, "esp32", cfg, {"hangar": "pw1"}) as (vb, con):
        assert until(seen(con, "connected to")), con.lines
        assert until(lambda: vb.watchdog.get("feeds", 0) >= 3), vb.watchdog
        assert vb.watchdog["max_gap_ms"] < 1500
        os.write(con.fd, b"\x03")
        assert until(seen(con, "watchdog stays armed: reset in 1500 ms"), 5), con.lines
        t0 = time.monotonic()
        assert until(seen(con, "midge: board esp32, role sensor", 2), 10), con.lines
        assert 1.2 < time.monotonic() - t0 < 5
        assert vb.causes == ["wdt"]
        assert until(seen(con, "connected to", 2)), con.lines
        # the board itself says why it reset (before its watchdog fires again)
        os.write(con.fd, b"\x03import machine; print('cause', machine.reset_cause())\r")
        assert until(seen(con, "cause 3")), con.lines


def test_wifi_wrong_password_idles_at_once(tmp_path):
    cfg = drone_config("d1", 1883)
    cfg.update(board="rpi-pico-w", wifi={"ssid": "hangar", "password": "wrong-pw"})
    lines = vboard_console(tmp_path, "rpi-pico-w", cfg, {"hangar": "right-pw"}, "idle")
    assert "midge: wifi: wrong password for hangar" in lines, lines
    assert "midge: idle, REPL free" in lines
    assert not any("wrong-pw" in ln or "right-pw" in ln for ln in lines)


def test_drone_rides_out_a_broker_outage(tmp_path):
    """QoS 1 readings while the broker is down fill the client's queue; the drone keeps
    running, reconnects when the broker is back, says online again and reports the drops."""
    first = harness.Mosquitto().start()
    sid = support.unique("drone")
    p = board(tmp_path, drone_config(sid, first.port, interval_ms=100))
    second = None
    try:
        w = Watcher(first.port)
        assert w.wait(lambda g: any(m[0].endswith("/altitude") for m in g))
        w.close()
        first.stop()
        time.sleep(2.5)  # 50 readings at QoS 1: more than the queue holds
        assert p.poll() is None
        second = harness.Mosquitto()
        second.port = first.port
        second.start()
        w = Watcher(second.port)
        try:
            online = ("sensors/%s/status" % sid, b"online")
            assert w.wait(lambda g: any(m[:2] == online for m in g), 30), w.got
            assert w.wait(lambda g: any(m[0].endswith("/temperature") for m in g))
        finally:
            w.close()
    finally:
        out = stop(p)
        for b in (first, second):
            if b is not None:
                b.stop()
    assert "midge: lost 127.0.0.1:%d" % first.port in out, out
    assert "readings dropped while offline (queue full)" in out, out
    assert "Traceback" not in out
