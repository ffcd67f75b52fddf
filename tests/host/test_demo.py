"""`make demo` end to end: the broker on MicroPython, two virtual drone boards, the
subscriber. Readings from both drones arrive within seconds, and stopping the demo (by
--duration or by Ctrl-C) leaves no process behind."""

import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def processes_under(path):
    """PIDs whose command line or working directory mentions `path`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if path in cmd or cwd.startswith(path):
            found.append(int(pid))
    return found


def start(tmp_path, *args):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.demo",
            "--workdir",
            str(tmp_path),
            "--interval-ms",
            "300",
        ]
        + list(args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_demo_bounded_run_shows_readings_and_cleans_up(tmp_path):
    t0 = time.monotonic()
    p = start(tmp_path, "--duration", "6")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert time.monotonic() - t0 < 30
    lines = out.splitlines()
    assert any("broker" in ln and "listening on 127.0.0.1:" in ln for ln in lines), out
    assert any("sensors/drone01/status online" in ln for ln in lines), out
    alt = [ln for ln in lines if "sensors/drone01/altitude " in ln]
    temp = [ln for ln in lines if "sensors/drone40/temperature " in ln]
    assert len(alt) >= 3 and len(temp) >= 3, out
    assert 0.0 <= float(alt[-1].split()[-1]) <= 110.0
    assert 20.0 < float(temp[-1].split()[-1]) < 30.0  # the virtual Pico's ADC die sensor
    assert not [ln for ln in lines if "sensors/drone01/temperature" in ln]  # kinds honoured
    assert "Traceback" not in out
    assert "stopped (drone01: " in lines[-1]
    assert processes_under(str(tmp_path)) == []


def test_demo_ctrl_c_stops_everything(tmp_path):
    p = start(tmp_path)
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "sensors/drone40/temperature " in line and any("drone01/altitude " in s for s in seen):
            break
    assert any("drone40/temperature " in s for s in seen), "".join(seen)
    assert processes_under(str(tmp_path))  # broker and boards are running
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0, "".join(seen) + out
    assert "broker and boards stopped" in out
    assert processes_under(str(tmp_path)) == []
